"""Small synthetic data sets, drawn with Pillow, for demos, tests and experiments.

Every set is deterministic: the same arguments (and seed) give the same files, byte for byte.

* make_shapes(out): a classification set: one shape per picture (circle, square, triangle,
  cross, diamond, donut, star, arrow; `classes` picks the first N) in a random colour, size,
  position and small rotation, on a noisy background of another colour.  Written as Darknet
  classifier data: train/NNNNN_<label>.png, valid/..., train.txt / valid.txt (image lists),
  labels.txt, and shapes.data (classes=, train=, valid=, labels=, names=, top=).  The label of
  a picture is the label name that occurs in its path, as Darknet finds it.
* make_detection(out): a detection set: 1..max_objects shapes per picture, not overlapping,
  with Darknet/YOLO labels beside each picture (train/NNNNN.png + train/NNNNN.txt, one line
  `class x_center y_center width height` per shape, relative to the picture size, the box
  being the shape's tight bounding box), names.txt and detection.data.
* make_arrays(out): a non-image set as .npz (x: (N, c, h, w) float32, y: (N,) int64): each
  class is a random pattern, each sample a randomly scaled copy of its class pattern plus
  noise (the scale is what an [l2norm] layer removes).  train.npz and valid.npz.

From the shell:

    python -m minidarknet.synthetic shapes data/shapes [--classes 6 --train 2000 ...]
    python -m minidarknet.synthetic detection data/detection
    python -m minidarknet.synthetic arrays data/arrays --shape 1,8,8 --classes 10

Lists and .data files hold absolute paths (as Darknet's own scripts write them), so the
set can be used from any working directory.
"""
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .errors import DataError

SHAPES = ("circle", "square", "triangle", "cross", "diamond", "donut", "star", "arrow")
SUPERSAMPLE = 4          # shapes are drawn 4x larger and scaled down: smooth edges
NOISE = 0.05             # standard deviation of the pixel noise (values in 0..1)
STRAIGHT = 12            # square, cross, arrow: rotated at most this many degrees


@dataclass
class SyntheticData:
    """What a generator wrote: `data` is the path to give to `minidarknet train` (a .data file,
    or train.npz), `valid` the validation data (the same .data file, or valid.npz)."""
    data: str
    valid: str
    names: list
    train_count: int
    valid_count: int
    files: list = field(default_factory=list)


# ---------------------------------------------------------------------------------- geometry
def _rotate(points, angle_degrees, cx, cy):
    a = math.radians(angle_degrees)
    c, s = math.cos(a), math.sin(a)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def shape_polygons(name, cx, cy, r, angle):
    """The shape `name` centred at (cx, cy) with outer radius r, as a list of
    ("polygon", points) / ("ellipse", box) / ("ring", box, width) drawing instructions."""
    if name == "circle":
        return [("ellipse", (cx - r, cy - r, cx + r, cy + r))]
    if name == "donut":
        return [("ring", (cx - r, cy - r, cx + r, cy + r), max(1.0, r * 0.38))]
    if name in ("square", "diamond"):
        half = r * (0.8 if name == "square" else 0.95 * math.sqrt(0.5))
        corners = [(-half, -half), (half, -half), (half, half), (-half, half)]
        return [("polygon", _rotate(corners, angle + (45 if name == "diamond" else 0), cx, cy))]
    if name == "triangle":
        corners = [(r * math.cos(math.radians(90 + k * 120)),
                    -r * math.sin(math.radians(90 + k * 120))) for k in range(3)]
        return [("polygon", _rotate(corners, angle, cx, cy))]
    if name == "cross":
        t = r * 0.3
        bar = [(-r, -t), (r, -t), (r, t), (-r, t)]
        post = [(-t, -r), (t, -r), (t, r), (-t, r)]
        return [("polygon", _rotate(bar, angle, cx, cy)),
                ("polygon", _rotate(post, angle, cx, cy))]
    if name == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            a = math.radians(-90 + 36 * k)
            points.append((radius * math.cos(a), radius * math.sin(a)))
        return [("polygon", _rotate(points, angle, cx, cy))]
    if name == "arrow":
        t = r * 0.22
        points = [(-r, -t), (r * 0.2, -t), (r * 0.2, -r * 0.6), (r, 0), (r * 0.2, r * 0.6),
                  (r * 0.2, t), (-r, t)]
        return [("polygon", _rotate(points, angle, cx, cy))]
    raise ValueError(f"unknown shape {name!r} (known: {', '.join(SHAPES)})")


def _shape_angle(rng, name):
    """Squares stay squares and diamonds diamonds: only a small tilt for shapes whose
    rotation would turn them into another class; any rotation for the rest."""
    if name in ("square", "diamond", "cross", "arrow"):
        tilt = float(rng.uniform(-STRAIGHT, STRAIGHT))
        return tilt + (180 * int(rng.integers(2)) if name == "arrow" else 0)
    return float(rng.uniform(0, 360))


def shape_mask(name, cx, cy, r, angle, size, with_box=False):
    """Coverage (0..1, float32, shape (size, size)) of one shape, drawn supersampled; with
    with_box also its tight box (x0, y0, x1, y1) in pixels, to a quarter pixel."""
    big = size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    k = SUPERSAMPLE
    for item in shape_polygons(name, cx * k, cy * k, r * k, angle):
        if item[0] == "polygon":
            draw.polygon(item[1], fill=255)
        else:
            # Pillow's ellipse box includes its right and bottom edge pixels
            x0, y0, x1, y1 = item[1]
            box = (x0, y0, x1 - 1, y1 - 1)
            if item[0] == "ellipse":
                draw.ellipse(box, fill=255)
            else:
                draw.ellipse(box, outline=255, width=int(round(item[2])))
    coverage = np.asarray(mask.resize((size, size), Image.BOX), dtype=np.float32) / 255
    if not with_box:
        return coverage
    drawn = np.asarray(mask) > 0
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    return coverage, (cols[0] / k, rows[0] / k, (cols[-1] + 1) / k, (rows[-1] + 1) / k)


def _luminance(colour):
    return float(np.dot(colour, (0.299, 0.587, 0.114)))


def _colours(rng, count):
    """A background colour and `count` shape colours that each stand out from it."""
    background = rng.uniform(0, 1, 3)
    colours = []
    while len(colours) < count:
        colour = rng.uniform(0, 1, 3)
        if abs(_luminance(colour) - _luminance(background)) > 0.25:
            colours.append(colour)
    return background, colours


def _finish(rng, picture):
    """Add pixel noise; float HxWx3 in 0..1 -> uint8 picture."""
    picture = picture + rng.normal(0, NOISE, picture.shape)
    return (np.clip(picture, 0, 1) * 255 + 0.5).astype(np.uint8)


def _paint(picture, mask, colour):
    alpha = mask[..., None]
    picture *= 1 - alpha
    picture += alpha * np.asarray(colour)[None, None, :]


def _rng(seed, split, index):
    return np.random.default_rng([int(seed), split, int(index)])


# ---------------------------------------------------------------------------------- classifier
def render_shape_picture(name, size, rng):
    """One classification picture (uint8, (size, size, 3)) of the shape `name`."""
    background, (colour,) = _colours(rng, 1)
    r = float(rng.uniform(0.24, 0.42)) * size
    cx, cy = rng.uniform(r, size - r, 2)
    picture = np.empty((size, size, 3))
    picture[...] = background
    _paint(picture, shape_mask(name, cx, cy, r, _shape_angle(rng, name), size), colour)
    return _finish(rng, picture)


def _check_names(names, classes):
    if not 1 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be 1..{len(SHAPES)}, not {classes}")
    return list(SHAPES[:classes]) if names is None else list(names)


def _check_labels_found(paths, names):
    """Darknet finds a picture's label as the label text inside its path: make sure exactly
    one label matches every path (a folder named like a label would break that)."""
    for path in paths:
        found = [n for n in names if n in path]
        if len(found) != 1:
            raise DataError(f"{path}: {len(found)} labels ({', '.join(found) or 'none'}) occur "
                            f"in this path, Darknet needs exactly one; write the data set to a "
                            f"folder whose path contains no label name")


def make_shapes(out, *, classes=6, train=2000, valid=500, size=32, seed=0):
    """Write the classification set (see the module doc) into `out`; returns SyntheticData."""
    names = _check_names(None, classes)
    out = Path(out).resolve()
    lists = {}
    for split, count, split_id in (("train", train, 0), ("valid", valid, 1)):
        folder = out / split
        _check_labels_found([str(folder / f"00000_{name}.png") for name in names], names)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index in range(count):
            rng = _rng(seed, split_id, index)
            label = int(rng.integers(classes))
            picture = render_shape_picture(names[label], size, rng)
            path = folder / f"{index:05d}_{names[label]}.png"
            Image.fromarray(picture).save(path, optimize=False, compress_level=1)
            paths.append(str(path))
        lists[split] = _write_lines(out / f"{split}.txt", paths)
    labels = _write_lines(out / "labels.txt", names)
    data = _write_lines(out / "shapes.data", [
        f"classes={classes}", f"train={lists['train']}", f"valid={lists['valid']}",
        f"labels={labels}", f"names={labels}", f"backup={out / 'backup'}", "top=2"])
    return SyntheticData(str(data), str(data), names, train, valid,
                         [str(data), labels, lists["train"], lists["valid"]])


def _write_lines(path, lines):
    path = Path(path)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------------- detection
def _place(rng, count, size, min_r, max_r):
    """Up to `count` (cx, cy, r) circles inside the picture that do not touch each other."""
    placed = []
    for _ in range(count * 30):
        if len(placed) == count:
            break
        r = float(rng.uniform(min_r, max_r)) * size
        cx, cy = (float(v) for v in rng.uniform(r, size - r, 2))
        if all(math.hypot(cx - x, cy - y) > r + q + 1 for x, y, q in placed):
            placed.append((cx, cy, r))
    return placed


def render_detection_picture(names, size, rng, max_objects, min_r=0.08, max_r=0.2):
    """One detection picture (uint8, (size, size, 3)) and its boxes
    [(class, x_center, y_center, width, height)] relative to the picture size."""
    count = int(rng.integers(1, max_objects + 1))
    spots = _place(rng, count, size, min_r, max_r)
    background, colours = _colours(rng, len(spots))
    picture = np.empty((size, size, 3))
    picture[...] = background
    boxes = []
    for (cx, cy, r), colour in zip(spots, colours):
        label = int(rng.integers(len(names)))
        mask, (x0, y0, x1, y1) = shape_mask(names[label], cx, cy, r,
                                            _shape_angle(rng, names[label]), size, True)
        _paint(picture, mask, colour)
        boxes.append((label, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size,
                      (x1 - x0) / size, (y1 - y0) / size))
    return _finish(rng, picture), boxes


def make_detection(out, *, classes=3, train=2000, valid=300, size=64, max_objects=3, seed=0,
                   min_size=0.08, max_size=0.2):
    """Write the detection set (see the module doc) into `out`; returns SyntheticData.
    min_size/max_size: a shape's radius as a fraction of the picture size."""
    names = _check_names(None, classes)
    if max_objects < 1:
        raise ValueError("max_objects must be at least 1")
    out = Path(out).resolve()
    lists = {}
    for split, count, split_id in (("train", train, 0), ("valid", valid, 1)):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index in range(count):
            rng = _rng(seed, split_id + 2, index)
            picture, boxes = render_detection_picture(names, size, rng, max_objects,
                                                      min_size, max_size)
            path = folder / f"{index:05d}.png"
            Image.fromarray(picture).save(path, optimize=False, compress_level=1)
            _write_lines(path.with_suffix(".txt"),
                         [f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in boxes])
            paths.append(str(path))
        lists[split] = _write_lines(out / f"{split}.txt", paths)
    names_file = _write_lines(out / "names.txt", names)
    data = _write_lines(out / "detection.data", [
        f"classes={classes}", f"train={lists['train']}", f"valid={lists['valid']}",
        f"names={names_file}", f"backup={out / 'backup'}"])
    return SyntheticData(str(data), str(data), names, train, valid,
                         [str(data), names_file, lists["train"], lists["valid"]])


# ---------------------------------------------------------------------------------- arrays
def make_arrays(out, *, classes=10, shape=(1, 8, 8), train=2000, valid=500, noise=0.6,
                seed=0):
    """Write train.npz / valid.npz (see the module doc) into `out`; returns SyntheticData."""
    shape = tuple(int(v) for v in shape)
    if classes < 2 or not shape or min(shape) < 1:
        raise ValueError("need at least 2 classes and a shape of positive sizes")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    patterns = np.random.default_rng([int(seed), 9]).normal(0, 1, (classes,) + shape)
    paths = []
    for split, count, split_id in (("train", train, 10), ("valid", valid, 11)):
        rng = np.random.default_rng([int(seed), split_id])
        y = rng.integers(classes, size=count)
        scale = rng.uniform(0.3, 3.0, (count,) + (1,) * len(shape))
        x = scale * (patterns[y] + rng.normal(0, noise, (count,) + shape))
        path = out / f"{split}.npz"
        np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))
        paths.append(str(path))
    return SyntheticData(paths[0], paths[1], [f"class{k}" for k in range(classes)], train, valid,
                         paths)


GENERATORS = {"shapes": make_shapes, "detection": make_detection, "arrays": make_arrays}


def generate(kind, out, **options):
    """make_<kind>(out, **options) for kind in shapes / detection / arrays (used by
    experiment files: `data: {generate: shapes, train: 500}`)."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown synthetic data set {kind!r} (known: {', '.join(GENERATORS)})")
    if kind == "arrays" and "shape" in options:
        options["shape"] = _parse_shape(options["shape"])
    return GENERATORS[kind](out, **options)


def _parse_shape(value):
    if isinstance(value, str):
        return tuple(int(v) for v in value.replace("x", ",").split(","))
    return tuple(int(v) for v in value)


# ---------------------------------------------------------------------------------- command
def _command():
    import click

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    def cli():
        """Write a synthetic data set (deterministic for a given --seed)."""

    common = [click.argument("out", type=click.Path(file_okay=False)),
              click.option("--classes", type=int, help="Number of classes."),
              click.option("--train", type=click.IntRange(min=0), help="Training samples."),
              click.option("--valid", type=click.IntRange(min=0), help="Validation samples."),
              click.option("--seed", type=int, default=0, show_default=True)]

    def with_common(function):
        for decorator in reversed(common):
            function = decorator(function)
        return function

    def report(result):
        click.echo(f"{result.train_count} training and {result.valid_count} validation "
                   f"samples, classes: {', '.join(result.names)}")
        click.echo(f"train with: {result.data}")

    def given(**options):
        return {k: v for k, v in options.items() if v is not None}

    @cli.command()
    @with_common
    @click.option("--size", type=click.IntRange(min=8), help="Picture width and height.")
    def shapes(out, **options):
        """Classification pictures of shapes (Darknet classifier data)."""
        report(make_shapes(out, **given(**options)))

    @cli.command()
    @with_common
    @click.option("--size", type=click.IntRange(min=16), help="Picture width and height.")
    @click.option("--max-objects", type=click.IntRange(min=1),
                  help="Shapes per picture, at most.")
    def detection(out, **options):
        """Pictures with several shapes and YOLO box labels (Darknet detector data)."""
        report(make_detection(out, **given(**options)))

    @cli.command()
    @with_common
    @click.option("--shape", help="Sample shape C,H,W (or a single number of inputs).")
    @click.option("--noise", type=float, help="Noise standard deviation.")
    def arrays(out, shape, **options):
        """Arrays in .npz files (x, y) for non-image networks."""
        if shape:
            options["shape"] = _parse_shape(shape)
        report(make_arrays(out, **given(**options)))

    return cli


def main(argv=None):
    _command().main(args=argv, prog_name="python -m minidarknet.synthetic")


if __name__ == "__main__":
    main()
