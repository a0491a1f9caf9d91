"""`minidarknet run CFG IMAGE...`: run a network on images and say what the output means.

* a detector (a cfg with [yolo], [region] or [detection] layers): the boxes, drawn into
  predictions.png (or --out FILE);
* a classifier (output layer [softmax]): the top-5 classes;
* anything else: the output's shape and statistics; --save writes it (.npy, or a picture when
  it has 1 or 3 channels).
Many images (a folder or a glob) run in batches with a progress bar; with --out DIR every
image gets one JSON line in DIR/results.jsonl (and a picture with --draw).  An unreadable
image is reported and skipped.
"""
import glob
import json
import os
import time

# The one-off costs printed at the end count from here (this module is imported when the
# command starts, before numpy and minidarknet).
STARTED = time.perf_counter()

from pathlib import Path  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402

from . import fork_option

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pnm", ".tga"}
DETECTION_TYPES = ("yolo", "region", "detection")


@click.command(name="run")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option("-w", "--weights", type=click.Path(dir_okay=False), help="Darknet .weights file.")
@click.option("--names", type=click.Path(dir_okay=False), help="Class names, one per line.")
@click.option("--batch", type=click.IntRange(min=1), help="Images per forward pass "
              "(default: all the images given, at most 32).")
@click.option("--resize", type=click.Choice(["letterbox", "stretch", "crop"]), default=None,
              help="How images are fitted to the [net] size: letterbox (pjreddie, default), "
                   "stretch (AlexeyAB detector) or crop (AlexeyAB classifier).")
@click.option("--layer", type=int, help="Report this layer's output instead of the network "
              "output (negative counts from the end).")
@click.option("--save", type=click.Path(dir_okay=False), help="Save the output: .npy (all "
              "images, stacked) or a picture (.png/.jpg, one per image).")
@click.option("--normalize", is_flag=True, help="With --save PICTURE: stretch min..max to "
              "0..1 (default: clip to [0, 1]).")
@click.option("--top", default=5, show_default=True, help="Classes shown for a classifier.")
@click.option("--thresh", default=0.5, show_default=True, help="Detection threshold.")
@click.option("--hier", default=0.5, show_default=True, help="Hierarchy threshold (region).")
@click.option("--nms", default=0.45, show_default=True, help="NMS IoU threshold (0: none).")
@click.option("--out", type=click.Path(), help="Detection picture (default predictions.png), "
              "or a folder: results.jsonl, and pictures with --draw.")
@click.option("--draw", is_flag=True, help="With --out DIR: also write each image's picture.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per image.")
@click.option("--data", type=click.Path(dir_okay=False), help="A .data file: --names "
              "defaults to its names=.")
@click.option("--resume", is_flag=True, help="With --out DIR: skip the images already in "
              "DIR/results.jsonl and add the others to it.")
@fork_option
def command(cfg, inputs, weights, names, batch, resize, layer, save, normalize, top, thresh,
            hier, nms, out, draw, as_json, data, resume, fork):
    """Run the network CFG on IMAGE files, folders or glob patterns, or video files
    (with --out DIR: DIR/<video>.mp4 with the boxes drawn and DIR/results.jsonl)."""
    import minidarknet
    from minidarknet import kernels
    from minidarknet.errors import MiniDarknetError
    from minidarknet.image import load_image, prepare_image, to_channels
    from minidarknet.video import is_video

    names = names or names_from_data(data)
    videos = [item for item in inputs if is_video(item)]
    if videos:
        from minidarknet.commands.videos import run_videos
        run_videos(cfg, weights, videos, out, batch, resize, thresh, hier, nms, names)
        inputs = [item for item in inputs if not is_video(item)]
        if not inputs:
            return

    paths = collect_images(inputs)
    folder = out is not None and (Path(out).is_dir() or not Path(out).suffix)
    if draw and not folder:
        raise click.BadParameter("--draw goes with --out DIR", param_hint="--draw")
    if resume and not folder:
        raise click.BadParameter("--resume goes with --out DIR", param_hint="--resume")
    for option, target in (("--save", save), ("--out", None if folder else out)):
        _check_writable(option, target)
    if resume:
        done = finished_images(os.path.join(out, "results.jsonl"))
        paths = [p for p in paths if p not in done]
        click.echo(f"resuming: {len(done)} images already in "
                   f"{os.path.join(out, 'results.jsonl')}, {len(paths)} to go", err=True)
        if not paths:
            return
    batch = batch or min(len(paths), 32)
    # A few pictures run faster without the compiled kernels than with loading them.
    click.get_current_context().with_resource(kernels.skipped_for_short_run(len(paths)))
    net = minidarknet.load(cfg, weights, batch=batch, fork=fork)
    ready = time.perf_counter()
    chosen = _pick_layer(net, layer)
    kind = _kind(net, chosen)
    class_names = read_names(names) if names else None
    mode = resize or "letterbox"
    report = Report(net, chosen, kind, class_names, paths, out if folder else None, draw,
                    as_json or folder, save, normalize, top, thresh, hier, nms, out, mode,
                    resume)
    # (said once every option has been checked; a network with no parameters, such as
    # cfg/l2.cfg, needs no weights)
    if weights is None and net.parameter_count():
        click.echo("warning: no weights given (--weights): the outputs come from the random "
                   "initial values", err=True)
    chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
    show_bar = folder or len(chunks) > 1
    try:
        with click.progressbar(chunks, label="images", file=click.get_text_stream("stderr"),
                               show_pos=True, item_show_func=lambda c: None) if show_bar \
                else _nullbar(chunks) as bar:
            for chunk in bar:
                images, inputs_, kept, reading = [], [], [], []
                for path in chunk:
                    start = time.perf_counter()
                    try:
                        im = load_image(path)
                    except MiniDarknetError as e:
                        if len(paths) == 1:
                            raise
                        # off the progress bar's line first
                        click.echo(("\n" if show_bar else "") + f"warning: skipping {e}",
                                   err=True)
                        report.skipped += 1
                        continue
                    images.append(im)
                    inputs_.append(prepare_image(to_channels(im, net.c, path), net.w, net.h,
                                                 mode))
                    kept.append(path)
                    reading.append(time.perf_counter() - start)
                if not kept:
                    continue
                start, one_off = time.perf_counter(), kernels.one_off_seconds()
                net.forward(np.stack(inputs_))
                # Loading compiled kernels during this forward is reported apart (one-off).
                seconds = time.perf_counter() - start - (kernels.one_off_seconds() - one_off)
                check_finite(net, chosen, kept, weights)
                for index, (path, im) in enumerate(zip(kept, images)):
                    report.emit(index, path, im, seconds / len(kept), reading[index])
    finally:
        report.close()
    report.finish()
    if not (as_json or folder):
        click.echo(f"one-off costs: {1000 * (ready - STARTED):.0f} ms to import numpy and "
                   f"minidarknet and load the network, compiled kernels {kernels.status()}"
                   + (f" ({1000 * kernels.one_off_seconds():.0f} ms to load)"
                      if kernels.enabled() else ""), err=True)


def _check_writable(option, target):
    """--save / --out FILE must be a file in an existing folder: checked before any work."""
    from minidarknet.errors import MiniDarknetError
    if target is None:
        return
    parent = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(parent):
        raise MiniDarknetError(f"{option} {target}: the folder {parent} does not exist")
    if os.path.isdir(target):
        raise MiniDarknetError(f"{option} {target}: is a folder (give a file name)")


def finished_images(jsonl):
    """The images named in an existing results.jsonl (for --resume); a last line cut short
    by a killed run is ignored (it is written again)."""
    from minidarknet.errors import MiniDarknetError
    from minidarknet.files import LIST_LIMIT, read_regular
    if not os.path.exists(jsonl):
        return set()
    data = read_regular(jsonl, lambda reason: MiniDarknetError(
        f"{jsonl}: cannot read: {reason}"), LIST_LIMIT)
    done = set()
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            done.add(json.loads(line)["image"])
        except (ValueError, KeyError, TypeError):
            continue
    return done


def check_finite(net, chosen, paths, weights):
    """A NaN or inf in the reported output is an error naming the first layer whose output
    is not finite, never shown as a result."""
    from minidarknet.errors import MiniDarknetError
    if np.isfinite(chosen.output).all():
        return
    first = next(l for l in net.layers if l.output is not None and
                 not np.isfinite(l.output).all())
    why = ("; no weights were given, so these are random initial values" if weights is None
           else "")
    raise MiniDarknetError(f"{paths[0]}: the output has NaN or inf values, first in layer "
                           f"{first.index} ({first.type}){why}")


def _strict_json(value):
    """A record with non-finite floats (a box whose exp() overflowed with random weights) as
    null: JSON has no Infinity, and strict readers reject it."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict_json(v) for v in value]
    return value


class _nullbar:
    def __init__(self, items):
        self.items = items

    def __enter__(self):
        return self.items

    def __exit__(self, *exc):
        return False


def collect_images(inputs):
    """Files as given; folders -> their image files (sorted); anything else -> a glob."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise click.BadParameter(f"{item}: no image files in this folder",
                                         param_hint="IMAGE")
            paths += found
        elif os.path.exists(item) or not glob.has_magic(item):
            paths.append(item)       # a missing plain path is reported (and skipped) later
        else:
            found = sorted(p for p in glob.glob(item, recursive=True)
                           if Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise click.BadParameter(f"{item}: no image files match", param_hint="IMAGE")
            paths += found
    return paths


def names_from_data(data):
    """The names= file of a .data file (None without one)."""
    if not data:
        return None
    import os.path
    from minidarknet.data import read_data_file, resolve
    options = read_data_file(data)
    if "names" not in options:
        return None
    return resolve(options["names"][0], os.path.dirname(os.path.abspath(data)))


def read_names(path):
    from minidarknet.errors import MiniDarknetError
    from minidarknet.files import read_regular
    data = read_regular(path, lambda reason: MiniDarknetError(
        f"{path}: cannot read names: {reason}"))
    text = data.decode("utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _pick_layer(net, layer):
    if layer is None:
        return net.output_layer
    n = len(net.layers)
    if not -n <= layer < n:
        raise click.BadParameter(f"the network has layers 0..{n - 1}", param_hint="--layer")
    return net.layers[layer]


def _kind(net, chosen):
    if chosen is net.output_layer:
        if any(l.type in DETECTION_TYPES for l in net.layers):
            return "detector"
        if chosen.type == "softmax":
            return "classifier"
    return "array"


class Report:
    """Turns each image's output into text, JSON, pictures and saved arrays."""

    def __init__(self, net, layer, kind, names, paths, folder, draw, as_json, save, normalize,
                 top, thresh, hier, nms, out, mode, resume=False):
        self.net, self.layer, self.kind, self.names = net, layer, kind, names
        self.folder, self.draw, self.as_json = folder, draw, as_json
        self.save, self.normalize, self.top = save, normalize, top
        self.thresh, self.hier, self.nms, self.mode = thresh, hier, nms, mode
        self.many = len(paths) > 1
        self.picture = out if (out and not folder) else "predictions.png"
        self.saved = None               # --save X.npy: the rows, streamed to a temporary file
        self.skipped = 0
        self.count = 0
        self.jsonl = None
        self.resume = resume
        if save and not save.lower().endswith(".npy"):
            shape = layer.buffer_shape
            if shape[0] not in (1, 3) or shape[1] * shape[2] == 1:
                from minidarknet.errors import MiniDarknetError
                raise MiniDarknetError(
                    f"--save {save}: layer {layer.index} ({layer.type}) outputs "
                    f"{' x '.join(map(str, shape))}, not a 1- or 3-channel picture; use "
                    f"--save FILE.npy")
        if folder:
            os.makedirs(folder, exist_ok=True)

    def _jsonl(self):
        """results.jsonl, opened at the first result (a failing run leaves the old one)."""
        if self.jsonl is None:
            self.jsonl = open(os.path.join(self.folder, "results.jsonl"),
                              "a" if self.resume else "w", encoding="utf-8")
        return self.jsonl

    def emit(self, index, path, image, seconds, reading=None):
        self.count += 1
        output = self.layer.output[index]
        record = {"image": path, "seconds": round(seconds, 6)}
        if reading is not None:
            record["read_seconds"] = round(reading, 6)
        if self.kind == "detector":
            lines = self._detections(index, path, image, record)
        elif self.kind == "classifier":
            lines = self._top_classes(output, record)
        else:
            lines = self._statistics(output, record)
        if self.save:
            self._save(output, path)
        record = _strict_json(record)
        if self.folder:
            self._jsonl().write(json.dumps(record, allow_nan=False) + "\n")
            self.jsonl.flush()
        elif self.as_json:
            click.echo(json.dumps(record, allow_nan=False))
        else:
            read = "" if reading is None else \
                f" (picture read and resized in {reading * 1000:.1f} ms)"
            click.echo(f"{path}: predicted in {seconds * 1000:.1f} ms{read}")
            for line in lines:
                click.echo(line)

    def _top_classes(self, output, record):
        probs = output.reshape(-1)
        order = np.argsort(-probs, kind="stable")[:self.top]
        record["top"] = [{"id": int(j), "name": self._name(j), "prob": float(probs[j])}
                         for j in order]
        return [f"{100 * probs[j]:5.2f}%: {self._name(j)}" for j in order]

    def _name(self, j):
        if self.names and j < len(self.names):
            return self.names[j]
        return f"class {j}"

    def _statistics(self, output, record):
        layer = self.layer
        record.update(layer=layer.index, type=layer.type, shape=list(output.shape),
                      min=float(output.min()), max=float(output.max()),
                      mean=float(output.mean()), std=float(output.std()))
        shape = " x ".join(str(s) for s in output.shape)
        return [f"layer {layer.index} ({layer.type}) output {shape}: min {record['min']:.6g} "
                f"max {record['max']:.6g} mean {record['mean']:.6g} std {record['std']:.6g}"]

    def _detections(self, index, path, image, record):
        from minidarknet.boxes import draw_detections, format_detections
        from minidarknet.image import save_pil
        h, w = image.shape[1:]
        dets = self.net.detections(thresh=self.thresh, hier=self.hier, nms=self.nms,
                                   image_size=(w, h), letterbox=self.mode == "letterbox",
                                   index=index)
        kept = [d for d in dets if (d.prob > self.thresh).any()]
        names = self.names or [f"class {j}" for j in range(kept[0].classes if kept else 0)]
        record["size"] = [w, h]
        record["detections"] = [d.to_dict(names, w, h) for d in kept]
        picture = None
        if self.folder and self.draw:
            picture = os.path.join(self.folder, Path(path).stem + ".png")
        elif not self.folder:
            picture = self._numbered(self.picture, path)
        if picture:
            save_pil(picture, draw_detections(image, kept, names, self.thresh))
            record["picture"] = picture
        lines = format_detections(kept, names, self.thresh, w, h)
        return lines + ([f"boxes drawn in {picture}"] if picture else [])

    def _numbered(self, name, path):
        if not self.many:
            return name
        p = Path(name)
        return str(p.with_name(f"{p.stem}-{Path(path).stem}{p.suffix}"))

    def _save(self, output, path):
        if self.save.lower().endswith(".npy"):
            if self.saved is None:
                self.saved = NpyStream(self.save, output.shape, output.dtype)
            self.saved.append(output)
            return
        from minidarknet.image import save_image
        picture = output.reshape(self.layer.buffer_shape)      # 1 or 3 channels (checked)
        if self.normalize:
            low, high = float(picture.min()), float(picture.max())
            picture = (picture - low) / (high - low) if high > low else picture * 0
        save_image(self._numbered(self.save, path), picture)

    def close(self):
        if self.jsonl:
            self.jsonl.close()
        if self.saved is not None and self.count == 0:
            self.saved.discard()

    def finish(self):
        from minidarknet.errors import MiniDarknetError
        if self.jsonl:
            click.echo(f"{self.count} images -> {self.jsonl.name}"
                       + (f" ({self.skipped} skipped)" if self.skipped else ""), err=True)
        if self.saved is not None:
            self.saved.finish()
        if self.count == 0:
            raise MiniDarknetError("no image could be read")


class NpyStream:
    """--save X.npy over many images: each output is appended to a temporary file as it
    comes (memory stays one output), and finish() writes X.npy (header + rows) atomically."""

    def __init__(self, path, shape, dtype):
        import tempfile
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        folder = os.path.dirname(os.path.abspath(path))
        fd, self.tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".rows", dir=folder)
        self.file = os.fdopen(fd, "wb")
        self.rows = 0

    def append(self, row):
        self.file.write(np.ascontiguousarray(row, self.dtype).tobytes())
        self.rows += 1

    def discard(self):
        self.file.close()
        try:
            os.unlink(self.tmp)
        except OSError:
            pass

    def finish(self):
        import tempfile
        self.file.close()
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(self.path),
                                   dir=folder)
        try:
            with os.fdopen(fd, "wb") as out, open(self.tmp, "rb") as rows:
                np.lib.format.write_array_header_1_0(out, {
                    "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                    "shape": (self.rows,) + self.shape})
                while True:
                    block = rows.read(1 << 24)
                    if not block:
                        break
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, self.path)
        except BaseException:
            for name in (tmp,):
                try:
                    os.unlink(name)
                except OSError:
                    pass
            raise
        finally:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
