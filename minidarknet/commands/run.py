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
from pathlib import Path

import click
import numpy as np

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
@fork_option
def command(cfg, inputs, weights, names, batch, resize, layer, save, normalize, top, thresh,
            hier, nms, out, draw, as_json, fork):
    """Run the network CFG on IMAGE files, folders or glob patterns."""
    import minidarknet
    from minidarknet.errors import MiniDarknetError
    from minidarknet.image import load_image, prepare_image, to_channels

    paths = collect_images(inputs)
    folder = out is not None and (Path(out).is_dir() or not Path(out).suffix)
    if draw and not folder:
        raise click.BadParameter("--draw goes with --out DIR", param_hint="--draw")
    batch = batch or min(len(paths), 32)
    net = minidarknet.load(cfg, weights, batch=batch, fork=fork)
    chosen = _pick_layer(net, layer)
    kind = _kind(net, chosen)
    class_names = read_names(names) if names else None
    mode = resize or "letterbox"
    report = Report(net, chosen, kind, class_names, paths, out if folder else None, draw,
                    as_json or folder, save, normalize, top, thresh, hier, nms, out, mode)
    chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
    show_bar = folder or len(chunks) > 1
    with click.progressbar(chunks, label="images", file=click.get_text_stream("stderr"),
                           show_pos=True, item_show_func=lambda c: None) if show_bar \
            else _nullbar(chunks) as bar:
        for chunk in bar:
            images, inputs_, kept = [], [], []
            for path in chunk:
                try:
                    im = load_image(path)
                except MiniDarknetError as e:
                    click.echo(f"\nwarning: skipping {e}", err=True)
                    report.skipped += 1
                    continue
                images.append(im)
                inputs_.append(prepare_image(to_channels(im, net.c, path), net.w, net.h, mode))
                kept.append(path)
            if not kept:
                continue
            start = time.perf_counter()
            net.forward(np.stack(inputs_))
            seconds = time.perf_counter() - start
            for index, (path, im) in enumerate(zip(kept, images)):
                report.emit(index, path, im, seconds / len(kept))
    report.finish()


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


def read_names(path):
    from minidarknet.errors import MiniDarknetError
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise MiniDarknetError(f"{path}: cannot read names: {e.strerror}") from None


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
                 top, thresh, hier, nms, out, mode):
        self.net, self.layer, self.kind, self.names = net, layer, kind, names
        self.folder, self.draw, self.as_json = folder, draw, as_json
        self.save, self.normalize, self.top = save, normalize, top
        self.thresh, self.hier, self.nms, self.mode = thresh, hier, nms, mode
        self.many = len(paths) > 1
        self.picture = out if (out and not folder) else "predictions.png"
        self.saved_arrays = []
        self.skipped = 0
        self.count = 0
        self.jsonl = None
        if folder:
            os.makedirs(folder, exist_ok=True)
            self.jsonl = open(os.path.join(folder, "results.jsonl"), "w", encoding="utf-8")

    def emit(self, index, path, image, seconds):
        self.count += 1
        output = self.layer.output[index]
        record = {"image": path, "seconds": round(seconds, 6)}
        if self.kind == "detector":
            lines = self._detections(index, path, image, record)
        elif self.kind == "classifier":
            lines = self._top_classes(output, record)
        else:
            lines = self._statistics(output, record)
        if self.save:
            self._save(output, path)
        if self.jsonl:
            self.jsonl.write(json.dumps(record) + "\n")
        elif self.as_json:
            click.echo(json.dumps(record))
        else:
            click.echo(f"{path}: predicted in {seconds * 1000:.1f} ms")
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
            self.saved_arrays.append(np.array(output))
            return
        from minidarknet.image import save_image
        picture = output.reshape(self.layer.buffer_shape)
        if picture.shape[0] not in (1, 3) or picture.shape[1] * picture.shape[2] == 1:
            raise click.UsageError(f"layer {self.layer.index} ({self.layer.type}) outputs "
                                   f"{' x '.join(map(str, picture.shape))}, not a 1- or "
                                   f"3-channel picture; use --save FILE.npy")
        if self.normalize:
            low, high = float(picture.min()), float(picture.max())
            picture = (picture - low) / (high - low) if high > low else picture * 0
        save_image(self._numbered(self.save, path), picture)

    def finish(self):
        if self.jsonl:
            self.jsonl.close()
            click.echo(f"{self.count} images -> {self.jsonl.name}"
                       + (f" ({self.skipped} skipped)" if self.skipped else ""), err=True)
        if self.save and self.saved_arrays:
            from minidarknet.atomic import write_atomic
            import io
            buffer = io.BytesIO()
            np.save(buffer, np.stack(self.saved_arrays))
            write_atomic(self.save, buffer.getvalue())
        if self.count == 0:
            raise click.ClickException("no image could be read")
