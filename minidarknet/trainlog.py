"""The training chart and log: AlexeyAB's `detector train -map` chart, as files.

    log = TrainLog(out="backup", cfg="net.cfg", data="net.data", map_every=100)
    minidarknet.train("net.cfg", "net.data", out="backup", callbacks=[log])
    log.finish()

A Trainer callback.  Every iteration adds a row (iteration, loss, avg loss, learning rate)
to ``train.csv``; every ``map_every`` iterations and at the last one (max_batches), when
``map_every`` is set, the mAP@0.5 of the validation list (``valid=`` of the .data file,
AlexeyAB's validate_detector_map as `minidarknet valid` computes it) goes into the ``map``
column, and the weights are saved as ``<stem>_best.weights`` when it is the best so far
(AlexeyAB does the same).  ``chart.png`` shows the loss (running average, and each
iteration's loss faintly) above the mAP, and is redrawn, with ``train.csv``, at every mAP
and at most every ``redraw_seconds`` otherwise; both are written atomically, so a viewer
never sees half a file.  A resumed run (``--weights`` a checkpoint) starts the files
again from its first iteration.

The mAP is computed on a separate network (built once with the validation batch size)
that gets a copy of the training network's parameters, as AlexeyAB copies them into its
``net_map``: validation does not touch the training network's buffers or momentum.
"""
import csv
import io
import math
import os
import time

import numpy as np

from .atomic import write_atomic

CSV_COLUMNS = ("iteration", "loss", "avg_loss", "lr", "map")


class TrainLog:
    def __init__(self, out, *, cfg=None, data=None, map_every=None, overrides=None,
                 valid_batch=None, redraw_seconds=10.0, chart=True, say=None):
        if map_every is not None and int(map_every) < 1:
            raise ValueError(f"map_every must be at least 1, not {map_every}")
        if map_every and (cfg is None or data is None):
            raise ValueError("map_every needs the cfg and the data to validate on")
        self.out = os.fspath(out)
        self.cfg, self.data, self.overrides = cfg, data, overrides
        self.map_every = None if map_every is None else int(map_every)
        self.valid_batch = valid_batch
        self.redraw_seconds = redraw_seconds
        self.chart = chart
        self.say = say
        self.rows = []                 # [iteration, loss, avg_loss, lr, map or None]
        self.maps = []                 # (iteration, mAP)
        self.best = -1.0
        self.max_batches = None
        self.stem = None
        self._valid_net = None
        self._drawn = -math.inf

    # ---------------------------------------------------------------- the callback
    def __call__(self, trainer, info):
        self.max_batches = trainer.max_batches
        self.stem = trainer.stem
        mean_ap = None
        if self.map_every and (info.iteration % self.map_every == 0 or
                               info.iteration >= trainer.max_batches):
            mean_ap = self.compute_map(trainer.net)
            self.maps.append((info.iteration, mean_ap))
            best = mean_ap > self.best
            if best:
                self.best = mean_ap
                trainer.save_checkpoint("best")
            self._tell(f"mAP@0.5 at iteration {info.iteration}: {mean_ap * 100:.2f} % "
                       f"(best {self.best * 100:.2f} %{', saved as best' if best else ''})")
        self.rows.append([info.iteration, info.loss, info.avg_loss, info.rate, mean_ap])
        if mean_ap is not None or time.monotonic() - self._drawn >= self.redraw_seconds:
            self.write()

    def finish(self):
        """Write the files with every row (call when training has ended, however)."""
        if self.rows:
            self.write()

    # ---------------------------------------------------------------- mAP
    def compute_map(self, net):
        from . import load
        from .valid import validate
        if self._valid_net is None:
            self._valid_net = load(self.cfg, batch=self.valid_batch or net.batch,
                                   overrides=self.overrides)
        copy_parameters(net, self._valid_net)
        report = validate(self.cfg, self.data, net=self._valid_net)
        if report.kind != "detector":
            raise ValueError(f"{self.cfg}: --map-every is for detectors")
        return float(report.detail.map)

    # ---------------------------------------------------------------- files
    def csv_bytes(self):
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for iteration, loss, avg, rate, mean_ap in self.rows:
            writer.writerow([iteration, f"{loss:.6g}", f"{avg:.6g}", f"{rate:.6g}",
                             "" if mean_ap is None else f"{mean_ap:.6f}"])
        return text.getvalue().encode("utf-8")

    def write(self):
        os.makedirs(self.out, exist_ok=True)
        write_atomic(os.path.join(self.out, "train.csv"), self.csv_bytes())
        if self.chart:
            self.draw(os.path.join(self.out, "chart.png"))
        self._drawn = time.monotonic()

    def draw(self, path):
        """Loss above mAP, one picture (AlexeyAB's chart has them on one set of axes)."""
        from PIL import Image
        from .image import save_pil
        from .plot import plot_curves
        rows = np.array([r[:4] for r in self.rows], np.float64)
        last = self.rows[-1]
        title = f"{self.stem or 'training'}: iteration {last[0]}" + \
            (f"/{self.max_batches}" if self.max_batches else "") + \
            f", avg loss {last[2]:.4f}"
        if self.maps:
            title += f", mAP@0.5 {self.maps[-1][1] * 100:.2f} % (best {self.best * 100:.2f} %)"
        # both panels span the whole run, as AlexeyAB's chart spans max_batches
        x_range = (rows[0, 0] - 1, max(self.max_batches or 0, rows[-1, 0]))
        panels = [_render(plot_curves, [("avg loss", rows[:, 0], rows[:, 2], rows[:, 1])],
                          title=title, ylabel="loss", size=(960, 400), x_range=x_range)]
        if self.map_every:
            xs = [i for i, _ in self.maps] or [rows[0, 0]]
            ys = [m * 100 for _, m in self.maps] or [float("nan")]
            panels.append(_render(plot_curves, [("mAP@0.5 %", xs, ys)], ylabel="mAP@0.5 (%)",
                                  size=(960, 400), x_range=x_range))
        width = max(p.width for p in panels)
        picture = Image.new("RGB", (width, sum(p.height for p in panels)), (255, 255, 255))
        top = 0
        for panel in panels:
            picture.paste(panel, (0, top))
            top += panel.height
        save_pil(path, picture)

    def _tell(self, text):
        if self.say is not None:
            self.say(text)


def _render(plot, curves, **options):
    from PIL import Image
    buffer = io.BytesIO()
    buffer.name = "chart.png"
    plot(buffer, curves, **options)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def copy_parameters(source, target):
    """Copy every layer's parameters (weights, biases, batch-norm scales and rolling
    statistics) of the network `source` into `target` (the same cfg)."""
    for a, b in zip(source.layers, target.layers):
        for (_, x), (_, y) in zip(a.parameters(), b.parameters()):
            np.copyto(y, x)
