"""AlexeyAB's detector loader (minidarknet/data_ab.py): the labels follow the pixels.

Synthetic pictures of solid rectangles on black, one pure colour per picture (the colour is
the class), go through every augmentation and combination; in each transformed picture the
pixels of each colour are found and every label box must enclose its rectangle's pixels
tightly (within two pixels), and every rectangle left visible must have its box."""
import itertools
import warnings

import numpy as np
import pytest
from PIL import Image

import minidarknet
from minidarknet.data import open_data
from minidarknet.data_ab import (ABOptions, add_gaussian_noise, cv_resize, gaussian_blur,
                                 make_sample, random_input_size)
from minidarknet.errors import CfgError, DarknetWarning

# one colour per picture: the 7 corners of the RGB cube other than black
PALETTE = np.array([c for c in itertools.product((0.0, 1.0), repeat=3) if any(c)], np.float32)
SIZES = [(80, 60), (64, 64), (50, 90), (120, 70), (64, 96), (100, 100), (72, 48)]


def rectangles(index, rng):
    """1-3 separated rectangles (x0, y0, x1, y1) in pixels inside picture `index`."""
    w, h = SIZES[index]
    placed = []
    for _ in range(200):
        if len(placed) == 1 + index % 3:
            break
        rw, rh = rng.integers(8, w // 2), rng.integers(8, h // 2)
        x0, y0 = rng.integers(0, w - rw + 1), rng.integers(0, h - rh + 1)
        box = (x0, y0, x0 + rw, y0 + rh)
        if all(box[0] >= b[2] + 10 or b[0] >= box[2] + 10 or box[1] >= b[3] + 10 or
               b[1] >= box[3] + 10 for b in placed):
            placed.append(box)
    return placed


def make_pictures(seed=0, colours=range(len(SIZES))):
    """[(path, (3, h, w) picture, (k, 5) labels)]: picture i has colour (class) colours[i]."""
    rng = np.random.default_rng(seed)
    pictures = []
    for index, (w, h) in enumerate(SIZES[:len(colours)]):
        im = np.zeros((3, h, w), np.float32)
        labels = []
        cls = colours[index]
        for x0, y0, x1, y1 in rectangles(index, rng):
            im[:, y0:y1, x0:x1] = PALETTE[cls][:, None, None]
            labels.append((cls, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w,
                           (y1 - y0) / h))
        pictures.append((f"picture{index}.png", im, np.array(labels, np.float64)))
    return pictures


PICTURES = make_pictures()
# for mixup: red, green, blue, white -- no two of them average to half of another
MIXUP_PICTURES = make_pictures(colours=(3, 1, 0, 6))


def cycling_pictures(pictures=PICTURES):
    """draw_picture for make_sample: the pictures in turn, so a mosaic's four are distinct."""
    counter = itertools.count()
    return lambda rng: pictures[next(counter) % len(pictures)]


def options(**changes):
    base = dict(jitter=0.3, resize=1.5, random=0, flip=1, hue=0.0, saturation=1.0,
                exposure=1.0, letter_box=0, mosaic=0, mosaic_bound=0, mixup=0, blur=0,
                gaussian_noise=0, resize_step=32)
    base.update(changes)
    return ABOptions(**base)


def colour_mask(image, cls, tolerance=0.25):
    return np.all(np.abs(image - PALETTE[cls][:, None, None]) < tolerance, axis=0)


def interior(mask):
    """Pixels whose 3x3 neighbourhood is all in the mask (slivers have none)."""
    inner = mask.copy()
    inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    inner[0], inner[-1], inner[:, 0], inner[:, -1] = False, False, False, False
    return inner


def pixel_box(row, w, h):
    x, y, bw, bh = row[:4]
    return (x - bw / 2) * w, (y - bh / 2) * h, (x + bw / 2) * w, (y + bh / 2) * h


def quadrant(sample, box, w, h):
    """The mosaic quadrant (x0, y0, x1, y1) holding the pixels in box (x0, y0, x1, y1)."""
    cut_x, cut_y = sample.cut
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    xs = (0, cut_x) if cx < cut_x else (cut_x, w)
    ys = (0, cut_y) if cy < cut_y else (cut_y, h)
    return xs[0], ys[0], xs[1], ys[1]


def check_labels(sample, w, h, bound=True, mask_of=colour_mask, slack=2.0,
                 classes=range(len(PALETTE))):
    """Every label box encloses its class's pixels near it tightly; every visible rectangle
    (interior pixels) lies in a box of its class."""
    image, truth = sample.image, sample.truth
    assert image.shape[1:] == (h, w)
    ys, xs = np.mgrid[0:h, 0:w]
    for cls in classes:
        mask = mask_of(image, cls)
        rows = truth[truth[:, 4] == cls]
        covered = np.zeros_like(mask)
        for row in rows:
            x0, y0, x1, y1 = pixel_box(row, w, h)
            near = mask & (xs >= x0 - slack) & (xs < x1 + slack) & (ys >= y0 - slack) & \
                (ys < y1 + slack)
            assert near.any(), (sample.kind, cls, row)
            px0, px1 = xs[near].min(), xs[near].max() + 1
            py0, py1 = ys[near].min(), ys[near].max() + 1
            if sample.kind == "mosaic" and not bound:
                # AB without mosaic_bound keeps the part of a box beyond its quadrant
                qx0, qy0, qx1, qy1 = quadrant(sample, (px0, py0, px1, py1), w, h)
                x0, y0, x1, y1 = max(x0, qx0), max(y0, qy0), min(x1, qx1), min(y1, qy1)
            for label, seen in ((x0, px0), (y0, py0), (x1, px1), (y1, py1)):
                assert abs(label - seen) <= slack, (sample.kind, cls, (x0, y0, x1, y1),
                                                    (px0, py0, px1, py1))
            covered |= (xs >= x0 - 1) & (xs < x1 + 1) & (ys >= y0 - 1) & (ys < y1 + 1)
        lost = interior(mask) & ~covered
        assert not lost.any(), (sample.kind, cls, "visible rectangle without a box",
                                np.argwhere(lost)[:3])


GEOMETRY = {
    "jitter": {},
    "no jitter, no zoom": dict(jitter=0, resize=1),
    "zoom out only": dict(resize=0.7),
    "no flip": dict(flip=0),
    "letter_box": dict(letter_box=1),
    "mosaic": dict(mosaic=1),
    "mosaic_bound": dict(mosaic=1, mosaic_bound=1),
    "mosaic, no jitter": dict(mosaic=1, jitter=0, resize=1),
    "mixup": dict(mixup=1),
    "mixup, letter_box": dict(mixup=1, letter_box=1),
}


@pytest.mark.parametrize("name", list(GEOMETRY))
@pytest.mark.parametrize("size", [(64, 64), (96, 64)])
def test_label_boxes_enclose_their_rectangles(name, size):
    w, h = size
    opts = options(**GEOMETRY[name])
    draw = cycling_pictures(MIXUP_PICTURES if opts.mixup else PICTURES)
    rng = np.random.default_rng(7)
    kinds = set()
    boxes = 0
    for _ in range(24):
        sample = make_sample(draw, rng, opts, w, h, max_boxes=200)
        kinds.add(sample.kind)
        boxes += len(sample.truth)
        if sample.kind == "mixup":
            # two pictures averaged: each colour at half strength, alone or on top of
            # another colour of the set (red, green, blue, white: the sums are unique)
            def half(image, cls):
                rest = 2 * image - PALETTE[cls][:, None, None]
                return np.all(np.abs(rest) < 0.35, axis=0) | \
                    np.any([colour_mask(rest, j, 0.35) for j in (3, 1, 0, 6)], axis=0)
            check_labels(sample, w, h, mask_of=half, classes=(3, 1, 0, 6))
        else:
            check_labels(sample, w, h, bound=bool(opts.mosaic_bound))
    assert boxes > 24
    if opts.mosaic or opts.mixup:
        assert kinds == {"single", "mosaic" if opts.mosaic else "mixup"}


PHOTOMETRIC = dict(hue=0.1, saturation=1.5, exposure=1.5, blur=5, gaussian_noise=8)


@pytest.mark.parametrize("name", ["jitter", "letter_box", "mosaic", "mosaic_bound"])
def test_colour_blur_noise_leave_the_boxes_and_the_geometry(name):
    """Hue/saturation/exposure, blur and noise change pixels only: the same seed gives the
    same boxes, and the bright pixels sit where the geometric-only run put the rectangles."""
    w, h = 64, 64
    plain, changed = options(**GEOMETRY[name]), options(**GEOMETRY[name], **PHOTOMETRIC)
    draw_a, draw_b = cycling_pictures(), cycling_pictures()
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    differs = 0
    for _ in range(24):
        a = make_sample(draw_a, rng_a, plain, w, h, 200)
        b = make_sample(draw_b, rng_b, changed, w, h, 200)
        np.testing.assert_array_equal(a.truth, b.truth)
        differs += not np.allclose(a.image, b.image)
        # every visible rectangle is still bright, the black background stays dark
        # (exposure >= 1/1.5, positive noise of sigma 8/255, blur of at most 5 pixels)
        bright = b.image.max(axis=0) > 0.45
        shapes = a.image.max(axis=0) > 0.5
        assert not (interior(interior(shapes)) & ~bright).any()
        assert not (interior(interior(~shapes)) & bright & (a.image.max(axis=0) == 0)).any()
        if b.kind == "single":
            check_labels(b, w, h, mask_of=lambda im, cls: (im.max(axis=0) > 0.45) &
                         colour_mask(a.image, cls, 0.5))
    assert differs >= 20


def test_samples_are_reproducible_and_seeded():
    opts = options(mosaic=1, **PHOTOMETRIC)

    def run(seed):
        rng = np.random.default_rng(seed)
        draw = cycling_pictures()
        return [make_sample(draw, rng, opts, 64, 64, 200) for _ in range(6)]

    one, two, other = run(5), run(5), run(6)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.truth, b.truth)
    assert any(not np.array_equal(a.image, c.image) for a, c in zip(one, other))


def test_max_boxes_and_small_boxes():
    """At most max boxes; a box thinner than a network pixel is dropped (AB's lowest_w)."""
    draw = cycling_pictures()
    rng = np.random.default_rng(1)
    for _ in range(10):
        s = make_sample(draw, rng, options(mosaic=1), 64, 64, max_boxes=2)
        assert len(s.truth) <= 2
    tiny = ("tiny.png", np.zeros((3, 200, 200), np.float32),
            np.array([[0, 0.5, 0.5, 0.004, 0.3], [1, 0.3, 0.3, 0.2, 0.2]]))
    s = make_sample(lambda rng: tiny, np.random.default_rng(0),
                    options(jitter=0, resize=1, flip=0), 64, 64, 200)
    np.testing.assert_array_equal(s.truth[:, 4], [1])


# --------------------------------------------------------------------------- pixel operations

def test_cv_resize_matches_pixel_centre_bilinear():
    im = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    same = cv_resize(im, 4, 3)
    np.testing.assert_array_equal(same, im)
    up = cv_resize(im, 8, 3)                 # x' = (x + .5)/2 - .5, clamped
    np.testing.assert_allclose(up[0, 0], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
    down = cv_resize(im, 2, 3)               # x' = 2x + .5: the mean of each pair
    np.testing.assert_allclose(down[1, 2], [im[1, 2, :2].mean(), im[1, 2, 2:].mean()])


def test_gaussian_blur_keeps_step_edges_and_mass():
    im = np.zeros((1, 20, 20), np.float32)
    im[:, :, 10:] = 1
    out = gaussian_blur(im, 5)
    np.testing.assert_allclose(out[0, :, 9] + out[0, :, 10], 1, atol=1e-6)   # symmetric
    assert out[0, 5, 7] == 0 and out[0, 5, 8] > 0                           # 2-pixel reach
    np.testing.assert_allclose(out.sum(), im.sum(), rtol=1e-5)     # reflect-101 edges


def test_gaussian_noise_only_brightens():
    im = np.full((3, 40, 40), 0.5, np.float32)
    out = add_gaussian_noise(im, 10, np.random.default_rng(0))
    assert (out >= im).all() and 0.3 < (out > im).mean() < 0.6
    assert abs((out - im).max() * 255 - 10 * 3.5) < 15


def test_random_sizes_follow_alexeyabs_rule():
    opts = options(random=1)
    rng = np.random.default_rng(0)
    sizes = {random_input_size(rng, 500, 416, 416, opts, 10000) for _ in range(300)}
    # round(r*13 + 1)*32 for r in [1/1.4, 1.4], the net's own size when r < 1 would enlarge
    assert sizes <= {(s, s) for s in range(320, 609, 32)} and len(sizes) > 5
    assert random_input_size(rng, 0, 416, 416, opts, 10000) == (608, 608)      # first block
    assert random_input_size(rng, 9950, 416, 416, opts, 10000) == (608, 608)   # last 100
    small = options(random=1, resize_step=8)
    assert {random_input_size(rng, 50, 64, 64, small, 1000)[0] % 8 for _ in range(50)} == {0}


# --------------------------------------------------------------------------- through the data set

CFG = """[net]
batch=8
subdivisions=1
width=64
height=64
channels=3
learning_rate=0.001
max_batches=40
{extra}
[convolutional]
filters=8
size=3
stride=2
pad=1
activation=leaky
[convolutional]
filters=16
size=3
stride=2
pad=1
activation=leaky
[convolutional]
filters=36
size=1
stride=1
activation=linear
[yolo]
mask=0,1,2
anchors=12,12, 18,18, 25,25
classes=7
num=3
jitter=.2
random={random}
"""


def write_set(folder):
    lines = []
    for path, im, labels in PICTURES:
        image = folder / path
        Image.fromarray((im.transpose(1, 2, 0) * 255).astype(np.uint8)).save(image)
        (folder / path).with_suffix(".txt").write_text(
            "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels))
        lines.append(str(image))
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    (folder / "names.txt").write_text("".join(f"c{i}\n" for i in range(7)))
    data = folder / "set.data"
    data.write_text(f"classes=7\ntrain={folder / 'train.txt'}\nnames={folder / 'names.txt'}\n")
    return data


def write_cfg(folder, extra="", random=0):
    path = folder / "net.cfg"
    path.write_text(CFG.format(extra=extra, random=random))
    return path


def test_mosaic_keys_select_the_loader_and_are_no_longer_reported(tmp_path):
    data = write_set(tmp_path)
    cfg = write_cfg(tmp_path, "mosaic=1\nblur=1\ngaussian_noise=4\ncutmix=1\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = minidarknet.load(cfg)
    reported = " ".join(str(w.message) for w in caught)
    assert "cutmix" in reported                       # still not implemented: reported
    for key in ("mosaic", "blur", "gaussian_noise"):
        assert f"{key}=" not in reported
    d = open_data(data, net)
    assert d.ab_loader is not None and d.ab_loader.options.mosaic == 1
    x, truth = d.train_batch(3, 8, seed=11)
    x2, truth2 = d.train_batch(3, 8, seed=11)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(truth, truth2)
    assert not np.array_equal(x, d.train_batch(4, 8, seed=11)[0])
    # pjreddie's layout: 5 values per box, the list ended by a zero x
    boxes = truth.reshape(8, -1, 5)
    assert (boxes[:, :, 4] < 7).all() and (boxes[:, 0, 0] > 0).any()
    plain = open_data(data, minidarknet.load(write_cfg(tmp_path)))
    assert plain.ab_loader is None                    # a pjreddie cfg keeps its loader


def test_alexeyab_fork_selects_the_loader_and_its_truth_layout(tmp_path):
    """fork="alexeyab": AB's loader, truths of 6 values (x y w h class track_id) x max=."""
    data = write_set(tmp_path)
    net = minidarknet.load(write_cfg(tmp_path, "mosaic=1\n"), fork="alexeyab")
    d = open_data(data, net)
    assert d.ab_loader is not None
    x, truth = d.train_batch(0, 8, seed=0)
    assert truth.shape == (8, 6 * 200)
    boxes = truth.reshape(8, 200, 6)
    count = (boxes[:, :, 0] > 0).sum(axis=1)
    assert count.min() >= 1
    for row, n in zip(boxes, count):
        assert (row[n:] == 0).all() and (row[:n, 2:4] > 0).all() and (row[:n, 4] < 7).all()
    loss = net.train_step(x, truth)          # AlexeyAB's [yolo] loss reads this layout
    assert np.isfinite(loss) and loss > 0


def test_letter_box_with_mosaic_is_refused_as_in_alexeyab(tmp_path):
    data = write_set(tmp_path)
    net = minidarknet.load(write_cfg(tmp_path, "mosaic=1\nletter_box=1\n"))
    with pytest.raises(CfgError, match=r"net\.cfg:\d+: .*letter_box=1 with mosaic=1"):
        open_data(data, net)


def test_classifier_training_reports_detector_only_keys(tmp_path):
    cfg = tmp_path / "c.cfg"
    cfg.write_text("[net]\nwidth=8\nheight=8\nchannels=3\nmosaic=1\n[convolutional]\n"
                   "filters=2\nsize=1\nactivation=linear\n[avgpool]\n[softmax]\n")
    for name in ("a", "b"):
        (tmp_path / "set" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "set" / name / "x.png")
    with pytest.warns(DarknetWarning, match="mosaic= is applied by AlexeyAB's detector"):
        open_data(tmp_path / "set", minidarknet.load(cfg))


def test_random_resizes_the_network_every_10_iterations(tmp_path):
    data = write_set(tmp_path)
    cfg = write_cfg(tmp_path, "mosaic=1\nresize_step=16\n", random=1)
    sizes = []

    def record(trainer, info):
        sizes.append(trainer.data.input_size(info.iteration - 1, trainer.seed))

    settings = dict(seed=2, overrides={"net.max_batches": 200, "net.batch": 2})
    trainer = minidarknet.Trainer(cfg, data, max_batches=31, callbacks=[record], **settings)
    result = trainer.run()
    assert result.status == "finished" and result.iterations == 31
    # the first block at the largest size, round(1.4 * 64/16 + 1) * 16, then one size per
    # block of 10 iterations, a multiple of resize_step
    assert sizes[:10] == [(112, 112)] * 10
    assert len(set(sizes[10:20])) == len(set(sizes[20:30])) == 1
    assert len(set(sizes)) > 1 and all(s is None or s[0] % 16 == 0 for s in sizes)
    assert set(trainer._sized.nets) >= {s for s in sizes if s is not None}
    # every step, whatever its size, updated the one network that is saved
    assert trainer.net.seen == 31 * 2
    again = minidarknet.Trainer(cfg, data, max_batches=12, **settings).run()
    np.testing.assert_array_equal(again.losses, result.losses[:12])      # reproducible
