"""Training and validation data in the layouts Darknet users have.

``open_data(data, net, split="train")`` reads one of:

* a Darknet ``.data`` file.  For a classifier (a network without detection layers):
  ``classes=N``, ``train=LIST``, ``valid=LIST``, ``labels=FILE`` (``names=`` if there is no
  ``labels=``); an image's class is the label whose text occurs in the image's path, and
  exactly one label must occur (Darknet's fill_truth rule; Darknet warns "Too many or too few
  labels" and trains on a multi-hot or empty truth, here the image is bad data).  For a
  detector ([yolo] or [region] layers): ``classes=N``, ``train=LIST``, ``valid=LIST``,
  ``names=FILE``; the boxes of ``a/images/b.jpg`` are read from ``a/labels/b.txt`` (Darknet
  replaces the folder ``images`` or ``JPEGImages`` with ``labels`` and the extension with
  ``.txt``) or, when that file does not exist, from ``a/images/b.txt`` beside the image (the
  AlexeyAB layout).  One box per line: ``class x_center y_center width height`` relative to
  the image; an empty file is an image without objects.
* a folder with one sub-folder per class (classes in sorted order of the folder names);
  when it has ``train/`` and ``valid/`` (or ``val/``) sub-folders, those are the splits.
* a ``.npz`` with ``x`` (N, c, h, w) or (N, inputs) and ``y``: (N,) integer classes (one-hot
  truth) or (N, truths) float truth rows.  Optional ``x_valid``/``y_valid`` are the
  validation split (without them, validation uses x and y).

Relative paths (in the .data file and in the lists) are taken from the current directory as
Darknet does, or, when nothing exists there, from the folder of the file that names them.

Training batches are a pure function of (seed, iteration), so a resumed run sees the same
data as an uninterrupted one.  Image data sets draw their images at random with replacement
(Darknet's get_random_paths) and augment them (minidarknet.augment); arrays are taken in
order from a permutation of the rows drawn per epoch (``shuffle=False``: in file order).
Decoded images are kept in memory up to ``cache_mb`` megabytes.

Bad data (a missing or unreadable image, a malformed label line, no label in the path) is
reported with the file (and line): ``on_bad_data="skip"`` warns and leaves the image out,
``"fail"`` raises DataError.
"""
import os
import warnings
from pathlib import Path

import numpy as np

from .augment import AugmentOptions, augment_classifier_image, augment_detector_image
from .data_ab import ABDetectorLoader, detector_only_keys, uses_ab_loader
from .errors import DarknetWarning, DataError, MiniDarknetError
from .files import LIST_LIMIT, TEXT_LIMIT, read_regular
from .image import load_image, prepare_image, resize_min_crop, to_channels

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pnm", ".tga"}
DETECTION_TYPES = ("yolo", "region", "Gaussian_yolo")
BAD_DATA_MODES = ("skip", "fail")
MAX_WARNINGS = 20
DATA_STREAM = 2        # the third word of the per-iteration seed (the network uses 1)

F32 = np.float32


# --------------------------------------------------------------------------- bad data

class BadData:
    """Where problems with the data go: warnings (skip) or a DataError (fail)."""

    def __init__(self, mode):
        if mode not in BAD_DATA_MODES:
            raise ValueError(f"on_bad_data must be one of {BAD_DATA_MODES}, not {mode!r}")
        self.mode = mode
        self.count = 0

    def report(self, message):
        if self.mode == "fail":
            raise DataError(message)
        self.count += 1
        if self.count <= MAX_WARNINGS:
            warnings.warn(f"skipping: {message}", DarknetWarning, stacklevel=2)
        elif self.count == MAX_WARNINGS + 1:
            warnings.warn("more bad data: further problems are counted, not shown",
                          DarknetWarning, stacklevel=2)


# --------------------------------------------------------------------------- text files

def read_data_file(path):
    """Darknet's read_data_cfg: ``key=value`` lines, ``#`` comments -> {key: (value, line)}."""
    options = {}
    for number, line in _lines(path, "data file"):
        text = line.strip()
        if not text or text[0] in "#;":
            continue
        if "=" not in text:
            raise DataError(f"{path}:{number}: expected key=value, got {_short(text)!r}")
        key, value = text.split("=", 1)
        options[key.strip()] = (value.strip(), number)
    return options


def _lines(path, what, limit=TEXT_LIMIT):
    reasons = {"No such file or directory": "no such file", "Is a directory": "is a directory"}
    data = read_regular(path, lambda reason: DataError(
        f"{path}: cannot read {what}: {reasons.get(reason, reason)}"), limit)
    # universal newlines, as a text-mode file gives them
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [(number, line) for number, line in enumerate(lines, 1)]


def read_list(path, what="list"):
    """Non-blank lines of a list file -> [(line number, text)] (at most LIST_LIMIT bytes)."""
    return [(n, line.strip()) for n, line in _lines(path, what, LIST_LIMIT) if line.strip()]


def _short(text, limit=60):
    return text if len(text) <= limit else text[:limit - 3] + "..."


def resolve(text, base):
    """A path from a data file: as given (relative to the current directory, Darknet's rule)
    if it exists there, else relative to `base` (the folder of the file naming it)."""
    if os.path.isabs(text) or os.path.exists(text) or base is None:
        return text
    other = os.path.join(base, text)
    return other if os.path.exists(other) else text


def label_file_candidates(image_path):
    """Where Darknet looks for an image's boxes: the folder images/JPEGImages replaced by
    labels (pjreddie's fill_truth_detection / AlexeyAB's replace_image_to_label), then the
    image's own folder; the extension becomes .txt."""
    p = Path(image_path)
    stem = p.with_suffix(".txt")
    parts = list(stem.parts)
    candidates = []
    for name in ("images", "JPEGImages"):
        if name in parts[:-1]:
            i = len(parts) - 2 - parts[:-1][::-1].index(name)
            swapped = parts[:i] + ["labels"] + parts[i + 1:]
            candidates.append(str(Path(*swapped)))
            break
    candidates.append(str(stem))
    return candidates


def parse_label_file(path, classes):
    """Boxes of one label file -> (k, 5) float64 (class, x, y, w, h).  Raises DataError
    naming FILE:LINE for a malformed line."""
    boxes = []
    for number, line in _lines(path, "label file"):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 5:
            raise DataError(f"{where}: expected 'class x y width height', got "
                            f"{_short(line.strip())!r}")
        try:
            cls = int(fields[0])
        except ValueError:
            raise DataError(f"{where}: class '{fields[0]}' is not an integer") from None
        if not 0 <= cls < classes:
            raise DataError(f"{where}: class {cls} is outside 0..{classes - 1} "
                            f"(classes={classes})")
        try:
            x, y, w, h = (float(v) for v in fields[1:])
        except ValueError:
            raise DataError(f"{where}: coordinates must be numbers, got "
                            f"{_short(' '.join(fields[1:]))!r}") from None
        if not all(np.isfinite([x, y, w, h])):
            raise DataError(f"{where}: coordinates must be finite numbers")
        if not (0 <= x <= 1 and 0 <= y <= 1 and 0 < w <= 1 and 0 < h <= 1):
            raise DataError(f"{where}: box {x:g} {y:g} {w:g} {h:g} is not relative to the "
                            f"image (centre in [0, 1], size in (0, 1])")
        boxes.append((cls, x, y, w, h))
    return np.array(boxes, np.float64).reshape(-1, 5)


# --------------------------------------------------------------------------- network facts

def network_kind(net):
    """"detector" for nets with [yolo]/[region] layers, else "classifier"."""
    types = {layer.type for layer in net.layers}
    if "detection" in types:
        raise DataError("training a [detection] (YOLOv1) network is not supported by "
                        "minidarknet's data loader")
    return "detector" if types & set(DETECTION_TYPES) else "classifier"


def detection_layer(net):
    layers = [l for l in net.layers if l.type in DETECTION_TYPES]
    return layers[-1] if layers else None


def truth_floats(layer):
    """Values per truth box the detection layer reads: 5 (x, y, w, h, class) or AlexeyAB's
    6 (x, y, w, h, class, track_id) -- the layer's `truth_floats`."""
    return getattr(layer, "truth_floats", 5)


def truth_rows(rows, floats):
    """(n, 5) rows of x, y, w, h, class in the layer's layout (track_id 0), flattened."""
    if floats == rows.shape[1]:
        return rows.reshape(-1)
    wide = np.zeros((rows.shape[0], floats), F32)
    wide[:, :rows.shape[1]] = rows
    return wide.reshape(-1)


# --------------------------------------------------------------------------- data sets

class DataSet:
    """Common interface: ``len()``, ``train_batch(iteration, count, seed)`` -> (x, truth),
    ``valid_batches(batch)`` -> iterator of ValidBatch."""
    kind = None
    source = None

    def iteration_rng(self, seed, iteration):
        return np.random.default_rng([int(seed), int(iteration), DATA_STREAM])

    def input_size(self, iteration, seed):
        """(w, h) of training batch `iteration` when it differs from the network's own size
        (AlexeyAB's random=1), else None."""
        return None


class ValidBatch:
    """x (n, c, h, w); labels (classifier: int array) or boxes (detector: list of (k, 5)
    arrays of class, x, y, w, h); sizes: [(w, h)] of the original images; paths."""

    def __init__(self, x, labels=None, boxes=None, sizes=None, paths=None):
        self.x, self.labels, self.boxes, self.sizes, self.paths = x, labels, boxes, sizes, paths


class ArrayData(DataSet):
    kind = "array"

    def __init__(self, x, y, net, source, shuffle=True):
        self.source = source
        self.shuffle = shuffle
        n = x.shape[0]
        if y.shape[0] != n:
            raise DataError(f"{source}: x has {n} rows but y has {y.shape[0]}")
        if n == 0:
            raise DataError(f"{source}: no rows")
        per_sample = int(np.prod(x.shape[1:]))
        if per_sample != net.inputs:
            raise DataError(f"{source}: x rows have {per_sample} values "
                            f"(shape {x.shape[1:]}); the network takes {net.inputs} "
                            f"({net.c}x{net.h}x{net.w})")
        self.x = np.ascontiguousarray(x, F32).reshape((n,) + _input_shape(net))
        self.labels = None
        if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1 and net.truths != 1):
            labels = y.reshape(-1)
            if not np.issubdtype(labels.dtype, np.integer):
                if not np.all(np.equal(np.mod(labels, 1), 0)):
                    raise DataError(f"{source}: y is one value per row but not integer "
                                    f"classes")
                labels = labels.astype(np.int64)
            bad = np.flatnonzero((labels < 0) | (labels >= net.truths))
            if bad.size:
                raise DataError(f"{source}: y[{bad[0]}] = {labels[bad[0]]} is not a class "
                                f"in 0..{net.truths - 1} (the network's truth size)")
            self.labels = labels.astype(np.int64)
            self.truth = np.zeros((n, net.truths), F32)
            self.truth[np.arange(n), self.labels] = 1
        else:
            truth = np.ascontiguousarray(y, F32).reshape(n, -1)
            if truth.shape[1] != net.truths:
                raise DataError(f"{source}: y rows have {truth.shape[1]} values; the network "
                                f"expects truths of {net.truths}")
            self.truth = truth
            if net.truths > 1 and np.all((truth == 0) | (truth == 1)) and \
                    np.all(truth.sum(axis=1) == 1):
                self.labels = truth.argmax(axis=1)

    def __len__(self):
        return self.x.shape[0]

    def _order(self, seed, epoch):
        n = len(self)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([int(seed), int(epoch), DATA_STREAM, 0]).permutation(n)

    def rows(self, iteration, count, seed):
        """Row indices of training batch `iteration`: rows [iteration*count, +count) of the
        sequence of per-epoch orders."""
        n = len(self)
        start = iteration * count
        out = np.empty(count, np.int64)
        filled = 0
        while filled < count:
            epoch, offset = divmod(start + filled, n)
            take = min(count - filled, n - offset)
            out[filled:filled + take] = self._order(seed, epoch)[offset:offset + take]
            filled += take
        return out

    def train_batch(self, iteration, count, seed):
        rows = self.rows(iteration, count, seed)
        return self.x[rows], self.truth[rows]

    def valid_batches(self, batch):
        for start in range(0, len(self), batch):
            stop = min(start + batch, len(self))
            labels = None if self.labels is None else self.labels[start:stop]
            yield ValidBatch(self.x[start:stop], labels=labels,
                             paths=[f"{self.source}[{i}]" for i in range(start, stop)])


class ImageData(DataSet):
    """Images with a class (classifier) or with boxes (detector)."""

    def __init__(self, entries, net, kind, source, bad, cache_mb=512, resize="letterbox"):
        self.entries = list(entries)       # [(path, label int | boxes array)]
        self.kind = kind
        self.source = source
        self.bad = bad
        self.net = net
        self.c, self.h, self.w = net.c, net.h, net.w
        self.truths = net.truths
        self.resize = resize
        self.cache = {}
        self.cache_bytes = 0
        self.cache_limit = int(cache_mb * 2 ** 20)
        self.ab_loader = None
        if kind == "detector":
            layer = detection_layer(net)
            # Darknet: args.num_boxes = l.max_boxes and args.jitter = l.jitter of the last layer
            self.truth_floats = truth_floats(layer)
            fits = net.truths // self.truth_floats
            self.max_boxes = min(getattr(layer, "max_boxes", fits), fits)
            self.options = AugmentOptions.from_network(net, jitter=layer.section.float(
                "jitter", 0.2))
            if uses_ab_loader(net, layer):          # AlexeyAB's loader (data_ab.py)
                self.ab_loader = ABDetectorLoader(self, net, layer)
        else:
            self.options = AugmentOptions.from_network(net)
            for key in detector_only_keys(net):
                warnings.warn(f"{net.options.section.where(key)}: [net] {key}= is applied by "
                              f"AlexeyAB's detector loader only; classifier training ignores "
                              f"it", DarknetWarning, stacklevel=3)
        if not self.entries:
            raise DataError(f"{source}: no usable images")

    def __len__(self):
        return len(self.entries)

    # ---------------------------------------------------------------- loading
    def load(self, index):
        """The decoded image of entry `index` (3 channels), or None when it cannot be read
        (reported to the bad-data policy and removed from the pool)."""
        path = self.entries[index][0]
        im = self.cache.get(path)
        if im is not None:
            return im
        try:
            im = load_image(path)
        except MiniDarknetError as e:
            self.bad.report(str(e))
            del self.entries[index]
            if not self.entries:
                raise DataError(f"{self.source}: no usable images left") from None
            return None
        if self.cache_bytes + im.nbytes <= self.cache_limit:
            self.cache[path] = im
            self.cache_bytes += im.nbytes
        return im

    def _draw(self, rng):
        while True:
            index = int(rng.integers(len(self.entries)))
            entry = self.entries[index]
            im = self.load(index)
            if im is not None:
                return entry, im

    # ---------------------------------------------------------------- training
    def input_size(self, iteration, seed):
        if self.ab_loader is None:
            return None
        size = self.ab_loader.input_size(iteration, seed)
        return None if size == (self.w, self.h) else size

    def train_batch(self, iteration, count, seed):
        if self.ab_loader is not None:
            return self.ab_loader.train_batch(iteration, count, seed)
        rng = self.iteration_rng(seed, iteration)
        x = np.empty((count, self.c, self.h, self.w), F32)
        truth = np.zeros((count, self.truths), F32)
        for i in range(count):
            (path, target), im = self._draw(rng)
            if self.kind == "detector":
                sample, rows = augment_detector_image(im, target, rng, self.options, self.w,
                                                      self.h, self.max_boxes)
                values = truth_rows(rows, self.truth_floats)
                truth[i, :values.size] = values
            else:
                sample = augment_classifier_image(im, rng, self.options, self.w, self.h)
                truth[i, target] = 1
            x[i] = to_channels(sample, self.c, path, DataError)
        return x, truth

    # ---------------------------------------------------------------- validation
    def prepare(self, im):
        """A validation input: Darknet's validate_classifier_single (resize_min + centre
        crop) for classifiers; letterbox (pjreddie validate_detector) or stretch (AlexeyAB
        without -letter_box) for detectors."""
        if self.kind == "detector":
            return prepare_image(im, self.w, self.h, self.resize)
        return resize_min_crop(im, self.w, self.h)

    def valid_batches(self, batch):
        index = 0
        while index < len(self.entries):
            xs, targets, sizes, paths = [], [], [], []
            while index < len(self.entries) and len(xs) < batch:
                path, target = self.entries[index]
                im = self.load(index)
                if im is None:
                    continue            # removed; the next entry moved to `index`
                index += 1
                xs.append(to_channels(self.prepare(im), self.c, path, DataError))
                targets.append(target)
                sizes.append((im.shape[2], im.shape[1]))
                paths.append(path)
            if not xs:
                break
            x = np.stack(xs)
            if self.kind == "detector":
                yield ValidBatch(x, boxes=targets, sizes=sizes, paths=paths)
            else:
                yield ValidBatch(x, labels=np.array(targets, np.int64), sizes=sizes,
                                 paths=paths)


def _input_shape(net):
    if net.c * net.h * net.w == net.inputs and net.inputs:
        return (net.c, net.h, net.w)
    return (net.inputs,)


# --------------------------------------------------------------------------- opening

def open_data(data, net, *, split="train", on_bad_data="skip", cache_mb=512, shuffle=True,
              resize="letterbox"):
    """The data set `data` (.data file, class folder or .npz) for `net`; split "train" or
    "valid"."""
    if split not in ("train", "valid"):
        raise ValueError(f"split must be 'train' or 'valid', not {split!r}")
    bad = BadData(on_bad_data)
    path = os.fspath(data)
    if os.path.isdir(path):
        return _open_folder(path, net, split, bad, cache_mb)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder")
    if path.lower().endswith(".npz"):
        return _open_npz(path, net, split, shuffle)
    return _open_data_file(path, net, split, bad, cache_mb, resize)


def _open_npz(path, net, split, shuffle):
    try:
        with np.load(path, allow_pickle=False) as arrays:
            names = set(arrays.files)
            if not {"x", "y"} <= names:
                raise DataError(f"{path}: needs arrays 'x' and 'y' (has {sorted(names)})")
            if split == "valid" and {"x_valid", "y_valid"} <= names:
                x, y = arrays["x_valid"], arrays["y_valid"]
            else:
                x, y = arrays["x"], arrays["y"]
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read arrays: {e}") from None
    return ArrayData(x, y, net, path, shuffle=shuffle)


def _image_files(folder):
    return sorted(str(p) for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _open_folder(path, net, split, bad, cache_mb):
    if network_kind(net) != "classifier":
        raise DataError(f"{path}: a folder of class folders is classifier data; this "
                        f"network is a detector (use a .data file with label files)")
    root = Path(path)
    valid_name = next((n for n in ("valid", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and valid_name:
        root = root / ("train" if split == "train" else valid_name)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root}: no class sub-folders")
    if len(classes) != net.truths:
        raise DataError(f"{root}: {len(classes)} class folders ({', '.join(classes[:5])}"
                        f"{', ...' if len(classes) > 5 else ''}) but the network outputs "
                        f"{net.truths} classes")
    entries = [(f, label) for label, name in enumerate(classes)
               for f in _image_files(root / name)]
    data = ImageData(entries, net, "classifier", str(root), bad, cache_mb)
    data.names = classes
    return data


def _option(options, key, path, default=None):
    if key in options:
        return options[key][0]
    if default is not None:
        return default
    raise DataError(f"{path}: missing '{key}=' line")


def _classes(options, path):
    text = _option(options, "classes", path)
    try:
        classes = int(text)
    except ValueError:
        raise DataError(f"{path}:{options['classes'][1]}: classes={text} is not an "
                        f"integer") from None
    if classes < 1:
        raise DataError(f"{path}:{options['classes'][1]}: classes must be at least 1")
    return classes


def _open_data_file(path, net, split, bad, cache_mb, resize):
    options = read_data_file(path)
    base = os.path.dirname(os.path.abspath(path))
    classes = _classes(options, path)
    list_key = split if split in options else ("train" if split == "valid" else None)
    if list_key is None or list_key not in options:
        raise DataError(f"{path}: missing '{split}=' line")
    list_path = resolve(options[list_key][0], base)
    list_base = os.path.dirname(os.path.abspath(list_path))
    images = []
    for number, text in read_list(list_path, "image list"):
        image = resolve(text, list_base)
        if not os.path.isfile(image):
            bad.report(f"{list_path}:{number}: image {text} not found")
            continue
        images.append((number, text, image))
    kind = network_kind(net)
    names_key = "names"
    if kind == "classifier":
        names_key = "labels" if "labels" in options else "names"
    names = None
    if names_key in options:
        names_path = resolve(options[names_key][0], base)
        if kind == "detector" and not os.path.isfile(names_path):
            # Only shown by `valid`; Darknet's training does not read it either.
            warnings.warn(f"{path}:{options[names_key][1]}: names file {names_path} not "
                          f"found; classes are shown by number", DarknetWarning,
                          stacklevel=3)
        else:
            names = [text for _, text in read_list(names_path, names_key)]
    if kind == "detector":
        entries = _detector_entries(images, list_path, classes, net, bad)
    else:
        if names is None:
            raise DataError(f"{path}: a classifier .data file needs 'labels=' (or 'names=')")
        entries = _classifier_entries(images, list_path, names, classes, net, bad, path)
    data = ImageData(entries, net, kind, list_path, bad, cache_mb, resize=resize)
    data.names = names
    data.classes = classes
    return data


def _classifier_entries(images, list_path, labels, classes, net, bad, data_path):
    if len(labels) < classes:
        raise DataError(f"{data_path}: classes={classes} but the labels file has only "
                        f"{len(labels)} labels")
    labels = labels[:classes]
    if classes != net.truths:
        raise DataError(f"{data_path}: classes={classes} but the network outputs "
                        f"{net.truths} values")
    entries = []
    for number, text, image in images:
        # Darknet matches the path as the list writes it (strstr), not a resolved one.
        found = [i for i, label in enumerate(labels) if label in text]
        if len(found) != 1:
            which = "no label" if not found else \
                f"{len(found)} labels ({', '.join(labels[i] for i in found[:4])})"
            bad.report(f"{list_path}:{number}: {which} in the path {text} (exactly one of "
                       f"the labels must occur in it)")
            continue
        entries.append((image, found[0]))
    return entries


def _detector_entries(images, list_path, classes, net, bad):
    layer = detection_layer(net)
    layer_classes = getattr(layer, "classes", classes)
    if layer_classes != classes:
        raise DataError(f"{list_path}: the data has classes={classes} but the network's "
                        f"[{layer.type}] layer has classes={layer_classes}")
    floats = truth_floats(layer)
    if net.truths % floats:
        raise DataError(f"the network's truth size {net.truths} is not boxes of {floats} "
                        f"values")
    return list(labelled_images(((number, image) for number, _, image in images), list_path,
                                classes, bad))


def labelled_images(numbered_images, list_path, classes, bad):
    """(image, (n, 5) boxes) for each (line number, image path) whose YOLO label file can be
    read; the others are reported to `bad` with the list's file and line."""
    for number, image in numbered_images:
        candidates = label_file_candidates(image)
        label_path = next((c for c in candidates if os.path.isfile(c)), None)
        if label_path is None:
            bad.report(f"{list_path}:{number}: no label file for {image} (looked for "
                       f"{' and '.join(candidates)})")
            continue
        try:
            boxes = parse_label_file(label_path, classes)
        except DataError as e:
            bad.report(str(e))
            continue
        yield image, boxes
