"""Data sets for training and validation: Darknet's formats, bad data, augmentation."""
import os
import warnings

import numpy as np
import pytest
from PIL import Image

import minidarknet
from minidarknet import augment
from minidarknet.data import (ArrayData, label_file_candidates, open_data, parse_label_file,
                              read_data_file)
from minidarknet.errors import DarknetWarning, DataError
from minidarknet.image import load_image


def classifier_cfg(tmp_path, classes=3, size=8, channels=3, extra=""):
    path = tmp_path / "cls.cfg"
    path.write_text(f"[net]\nbatch=4\nwidth={size}\nheight={size}\nchannels={channels}\n"
                    f"min_crop={size}\nmax_crop={size}\nflip=0\n{extra}\n"
                    f"[connected]\noutput={classes}\nactivation=linear\n\n[softmax]\n")
    return minidarknet.load(path)


def detector_cfg(tmp_path, size=32, classes=2, net_extra="flip=0\n", yolo_extra="jitter=0\n"):
    path = tmp_path / "det.cfg"
    path.write_text(
        f"[net]\nbatch=2\nwidth={size}\nheight={size}\nchannels=3\n{net_extra}\n"
        f"[convolutional]\nfilters={3 * (classes + 5)}\nsize=8\nstride=8\npad=0\n"
        f"activation=linear\n\n[yolo]\nmask=0,1,2\nanchors=4,4, 8,8, 16,16\n"
        f"classes={classes}\nnum=3\n{yolo_extra}")
    return minidarknet.load(path)


def save_png(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(rgb, np.uint8)).save(path)
    return path


def colour_image(path, colour, size=(8, 8)):
    return save_png(path, np.broadcast_to(np.array(colour, np.uint8), size + (3,)))


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def classifier_data(tmp_path):
    """cats/dogs/birds with relative paths in the list (relative to the list's folder)."""
    images = [("pics/001_cat.png", (255, 0, 0)), ("pics/002_dog.png", (0, 255, 0)),
              ("pics/003_bird.png", (0, 0, 255)), ("pics/004_cat.png", (10, 20, 30))]
    for name, colour in images:
        colour_image(tmp_path / name, colour)
    write(tmp_path / "train.txt", "".join(name + "\n" for name, _ in images))
    write(tmp_path / "labels.txt", "cat\ndog\nbird\n")
    return write(tmp_path / "set.data", "classes=3\ntrain=train.txt\nvalid=train.txt\n"
                 "labels=labels.txt\nbackup=backup/\n# comment\n")


# --------------------------------------------------------------------------- classifier

def test_classifier_labels_come_from_the_path(tmp_path, classifier_data):
    net = classifier_cfg(tmp_path)
    data = open_data(classifier_data, net)
    assert data.kind == "classifier" and len(data) == 4
    assert [label for _, label in data.entries] == [0, 1, 2, 0]
    x, truth = data.train_batch(0, 6, seed=1)
    assert x.shape == (6, 3, 8, 8) and truth.shape == (6, 3)
    assert np.all(truth.sum(axis=1) == 1)
    # min_crop = max_crop = the net size, flip=0, no colour change: each input is the image.
    for row, target in zip(x, truth.argmax(axis=1)):
        matches = [i for i, (path, label) in enumerate(data.entries)
                   if np.array_equal(row, load_image(path))]
        assert matches and all(data.entries[i][1] == target for i in matches)


def test_batches_depend_only_on_seed_and_iteration(tmp_path, classifier_data):
    net = classifier_cfg(tmp_path, extra="hue=.1\nsaturation=1.5\nexposure=1.5\nflip=1\n")
    a = open_data(classifier_data, net)
    b = open_data(classifier_data, net)
    for i in (0, 5):
        xa, ta = a.train_batch(i, 8, seed=3)
        xb, tb = b.train_batch(i, 8, seed=3)
        assert np.array_equal(xa, xb) and np.array_equal(ta, tb)
    assert not np.array_equal(a.train_batch(0, 8, 3)[0], a.train_batch(1, 8, 3)[0])
    assert not np.array_equal(a.train_batch(0, 8, 3)[0], a.train_batch(0, 8, 4)[0])


def test_bad_classifier_entries_are_skipped_with_file_and_line(tmp_path, classifier_data):
    colour_image(tmp_path / "pics/005_catdog.png", (1, 2, 3))
    colour_image(tmp_path / "pics/006_fish.png", (1, 2, 3))
    with open(tmp_path / "train.txt", "a") as f:
        f.write("pics/005_catdog.png\npics/006_fish.png\npics/missing_cat.png\n")
    net = classifier_cfg(tmp_path)
    with pytest.warns(DarknetWarning) as caught:
        data = open_data(classifier_data, net)
    messages = [str(w.message) for w in caught]
    list_file = str(tmp_path / "train.txt")
    assert any(f"{list_file}:7: image pics/missing_cat.png not found" in m for m in messages)
    assert any(f"{list_file}:5: 2 labels (cat, dog) in the path" in m for m in messages)
    assert any(f"{list_file}:6: no label in the path pics/006_fish.png" in m for m in messages)
    assert len(data) == 4
    with pytest.raises(DataError, match=r"train.txt:7: image pics/missing_cat.png not found"):
        open_data(classifier_data, net, on_bad_data="fail")
    (tmp_path / "train.txt").write_text("pics/001_cat.png\npics/005_catdog.png\n")
    with pytest.raises(DataError, match=r"train.txt:2: 2 labels \(cat, dog\)"):
        open_data(classifier_data, net, on_bad_data="fail")


def test_an_unreadable_image_is_skipped_when_drawn(tmp_path, classifier_data):
    (tmp_path / "pics/003_bird.png").write_bytes(b"not a png at all")
    net = classifier_cfg(tmp_path)
    data = open_data(classifier_data, net)
    with pytest.warns(DarknetWarning, match="003_bird.png: cannot read image"):
        x, truth = data.train_batch(0, 16, seed=0)
    assert x.shape[0] == 16 and truth[:, 2].sum() == 0 and len(data) == 3
    strict = open_data(classifier_data, net, on_bad_data="fail")
    with pytest.raises(DataError, match="003_bird.png: cannot read image"):
        strict.train_batch(0, 16, seed=0)


def test_classifier_data_file_errors(tmp_path, classifier_data):
    net = classifier_cfg(tmp_path, classes=4)
    with pytest.raises(DataError, match="classes=3 but the network outputs 4"):
        open_data(classifier_data, net)
    write(tmp_path / "bad.data", "classes=3\nthis line is wrong\n")
    with pytest.raises(DataError, match=r"bad.data:2: expected key=value"):
        open_data(tmp_path / "bad.data", net)
    write(tmp_path / "nolist.data", "classes=3\nlabels=labels.txt\n")
    with pytest.raises(DataError, match="missing 'train=' line"):
        open_data(tmp_path / "nolist.data", net)
    with pytest.raises(DataError, match="no such file"):
        open_data(tmp_path / "absent.data", net)


def test_read_data_file_keeps_values_and_lines(classifier_data):
    options = read_data_file(classifier_data)
    assert options["classes"] == ("3", 1) and options["backup"] == ("backup/", 5)


def test_images_are_fitted_to_the_net_and_grey_for_one_channel(tmp_path, classifier_data):
    net = classifier_cfg(tmp_path, size=4, channels=1)
    data = open_data(classifier_data, net)
    x, truth = data.train_batch(0, 8, seed=0)
    assert x.shape == (8, 1, 4, 4)
    # The 8x8 flat pictures scaled to 4x4 stay flat; grey is stb's (77 R + 150 G + 29 B)/256.
    grey = {0: {77 / 256, (10 * 77 + 20 * 150 + 30 * 29) / 255 / 256}, 1: {150 / 256},
            2: {29 / 256}}
    for row, label in zip(x, truth.argmax(axis=1)):
        assert np.ptp(row) < 1e-6
        assert any(abs(row.mean() - g) < 1e-6 for g in grey[label])
    batch = next(data.valid_batches(8))
    assert batch.x.shape == (4, 1, 4, 4) and list(batch.labels) == [0, 1, 2, 0]


def test_decoded_images_are_cached(tmp_path, classifier_data):
    net = classifier_cfg(tmp_path)
    data = open_data(classifier_data, net)
    first = [b.x for b in data.valid_batches(4)][0]
    for name in os.listdir(tmp_path / "pics"):
        os.remove(tmp_path / "pics" / name)
    again = [b.x for b in data.valid_batches(4)][0]
    assert np.array_equal(first, again)


# --------------------------------------------------------------------------- folders

def test_class_folders_with_train_and_valid_splits(tmp_path):
    for split, count in (("train", 2), ("valid", 1)):
        for label, colour in (("a", (255, 0, 0)), ("b", (0, 255, 0)), ("c", (0, 0, 255))):
            for i in range(count):
                colour_image(tmp_path / "set" / split / label / f"{i}.png", colour)
    net = classifier_cfg(tmp_path)
    train = open_data(tmp_path / "set", net)
    valid = open_data(tmp_path / "set", net, split="valid")
    assert train.names == ["a", "b", "c"] and len(train) == 6 and len(valid) == 3
    assert [label for _, label in valid.entries] == [0, 1, 2]
    with pytest.raises(DataError, match="3 class folders .* but the network outputs 4"):
        open_data(tmp_path / "set", classifier_cfg(tmp_path, classes=4))


# --------------------------------------------------------------------------- arrays

def test_npz_labels_become_one_hot_truth(tmp_path):
    net = classifier_cfg(tmp_path)
    x = np.arange(5 * 192, dtype=np.float32).reshape(5, 192)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([2, 0, 1, 1, 0]),
             x_valid=x[:2], y_valid=np.array([1, 1]))
    data = open_data(tmp_path / "a.npz", net, shuffle=False)
    xb, truth = data.train_batch(1, 4, seed=0)          # rows 4, 0, 1, 2 (wraps around)
    assert np.array_equal(xb.reshape(4, -1), x[[4, 0, 1, 2]])
    assert truth.tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]]
    valid = open_data(tmp_path / "a.npz", net, split="valid")
    assert list(next(valid.valid_batches(8)).labels) == [1, 1]


def test_npz_truth_rows_and_errors(tmp_path):
    net = classifier_cfg(tmp_path)
    x = np.zeros((3, 3, 8, 8), np.float32)
    truth = np.array([[.2, .3, .5], [1, 0, 0], [0, 0, 1]], np.float32)
    data = ArrayData(x, truth, net, "mem", shuffle=False)
    assert np.array_equal(data.train_batch(0, 3, 0)[1], truth) and data.labels is None
    with pytest.raises(DataError, match="x has 3 rows but y has 2"):
        ArrayData(x, truth[:2], net, "mem")
    with pytest.raises(DataError, match="x rows have 48 values"):
        ArrayData(np.zeros((3, 48), np.float32), truth, net, "mem")
    with pytest.raises(DataError, match=r"y\[1\] = 3 is not a class in 0..2"):
        ArrayData(x, np.array([0, 3, 1]), net, "mem")
    with pytest.raises(DataError, match="expects truths of 3"):
        ArrayData(x, np.zeros((3, 4), np.float32), net, "mem")
    np.savez(tmp_path / "nox.npz", y=np.zeros(3))
    with pytest.raises(DataError, match="needs arrays 'x' and 'y'"):
        open_data(tmp_path / "nox.npz", net)


# --------------------------------------------------------------------------- detector

def test_label_files_are_found_like_darknet(tmp_path):
    assert label_file_candidates("/d/images/train/a.jpg") == \
        ["/d/labels/train/a.txt", "/d/images/train/a.txt"]
    assert label_file_candidates("/d/VOC/JPEGImages/x.png") == \
        ["/d/VOC/labels/x.txt", "/d/VOC/JPEGImages/x.txt"]
    assert label_file_candidates("pics/a.png") == ["pics/a.txt"]


def test_malformed_label_lines_name_file_and_line(tmp_path):
    cases = {"0 .5 .5 .2": "expected 'class x y width height'",
             "a .5 .5 .2 .2": "class 'a' is not an integer",
             "2 .5 .5 .2 .2": "class 2 is outside 0..1",
             "1 .5 .5 x .2": "coordinates must be numbers",
             "1 .5 .5 nan .2": "must be finite",
             "1 1.5 .5 .2 .2": "is not relative to the image",
             "1 .5 .5 0 .2": "is not relative to the image"}
    for line, message in cases.items():
        path = write(tmp_path / "l.txt", "0 .5 .5 .1 .1\n\n" + line + "\n")
        with pytest.raises(DataError) as caught:
            parse_label_file(path, classes=2)
        assert str(caught.value).startswith(f"{path}:3: ") and message in str(caught.value)
    boxes = parse_label_file(write(tmp_path / "ok.txt", "1 0.5 0.25 0.5 0.1\n"), 2)
    assert boxes.tolist() == [[1, .5, .25, .5, .1]]


def make_detection_set(tmp_path, bad_line=False):
    """Two pictures: one in images/ with labels/, one with its .txt beside it."""
    pic = np.zeros((16, 32, 3), np.uint8)
    pic[4:12, 8:16] = 255                 # box: x 8..16 of 32, y 4..12 of 16
    save_png(tmp_path / "set/images/a.png", pic)
    write(tmp_path / "set/labels/a.txt", "1 0.375 0.5 0.25 0.5\n")
    save_png(tmp_path / "set/other/b.png", pic)
    write(tmp_path / "set/other/b.txt", "0 0.375 0.5 0.25 0.5\n" + ("7 1 1 1\n" if bad_line
                                                                   else ""))
    save_png(tmp_path / "set/other/c.png", np.zeros((8, 8, 3), np.uint8))
    write(tmp_path / "set/other/c.txt", "")
    save_png(tmp_path / "set/other/d.png", pic)    # no label file
    write(tmp_path / "set/list.txt", "images/a.png\nother/b.png\nother/c.png\nother/d.png\n")
    write(tmp_path / "set/names.txt", "circle\nsquare\n")
    return write(tmp_path / "set/det.data", "classes=2\ntrain=list.txt\nvalid=list.txt\n"
                 "names=names.txt\n")


def test_detector_data_reads_boxes_and_reports_bad_labels(tmp_path):
    data_file = make_detection_set(tmp_path, bad_line=True)
    net = detector_cfg(tmp_path)
    with pytest.warns(DarknetWarning) as caught:
        data = open_data(data_file, net)
    messages = " | ".join(str(w.message) for w in caught)
    assert f"{tmp_path}/set/other/b.txt:2: expected 'class x y width height'" in messages
    assert f"{tmp_path}/set/list.txt:4: no label file for" in messages
    assert [os.path.basename(p) for p, _ in data.entries] == ["a.png", "c.png"]
    assert data.entries[0][1].tolist() == [[1, .375, .5, .25, .5]]
    assert data.entries[1][1].shape == (0, 5)
    with pytest.raises(DataError, match="b.txt:2"):
        open_data(data_file, net, on_bad_data="fail")
    with pytest.raises(DataError, match="classes=2 but the network's \\[yolo\\] layer has "
                                        "classes=3"):
        open_data(data_file, detector_cfg(tmp_path, classes=3))


def test_detector_truth_follows_the_image(tmp_path):
    """jitter, flip and colour on: the truth box must cover the white square wherever the
    augmentation put it, in Darknet's truth layout (x, y, w, h, class) zero-padded."""
    data_file = make_detection_set(tmp_path)
    net = detector_cfg(tmp_path, net_extra="flip=1\nhue=.1\nexposure=1.2\n",
                       yolo_extra="jitter=.3\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DarknetWarning)
        data = open_data(data_file, net)
    checked = 0
    for iteration in range(6):
        x, truth = data.train_batch(iteration, 4, seed=0)
        assert truth.shape == (4, net.truths) and net.truths == 450
        for image, row in zip(x, truth):
            boxes = row.reshape(-1, 5)
            if not boxes[0].any():
                assert not row.any()          # the empty picture
                continue
            assert not boxes[1:].any()
            bx, by, bw, bh, cls = boxes[0]
            assert cls in (0, 1)
            # the square stays brighter than the 0.5 canvas and the black picture
            bright = np.argwhere(image.mean(axis=0) > 0.75)
            (y0, x0), (y1, x1) = bright.min(axis=0), bright.max(axis=0) + 1
            assert abs(bx * 32 - (x0 + x1) / 2) <= 1.5 and abs(by * 32 - (y0 + y1) / 2) <= 1.5
            assert abs(bw * 32 - (x1 - x0)) <= 2.5 and abs(bh * 32 - (y1 - y0)) <= 2.5
            checked += 1
    assert checked >= 8


def test_detector_truth_is_capped_at_the_heads_max(tmp_path):
    save_png(tmp_path / "p.png", np.zeros((8, 8, 3), np.uint8))
    write(tmp_path / "p.txt", "0 .2 .2 .1 .1\n1 .5 .5 .1 .1\n0 .8 .8 .1 .1\n")
    write(tmp_path / "l.txt", "p.png\n")
    write(tmp_path / "d.data", "classes=2\ntrain=l.txt\n")
    net = detector_cfg(tmp_path, yolo_extra="jitter=0\nmax=2\n")
    x, truth = open_data(tmp_path / "d.data", net).train_batch(0, 1, seed=0)
    boxes = truth.reshape(-1, 5)
    assert np.all(boxes[:2, 2:4] == np.float32(.1)) and not boxes[2:].any()


def test_detector_validation_letterboxes_and_keeps_sizes(tmp_path):
    data_file = make_detection_set(tmp_path)
    net = detector_cfg(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DarknetWarning)
        data = open_data(data_file, net, split="valid")
    batch = next(data.valid_batches(8))
    assert batch.x.shape == (3, 3, 32, 32) and batch.sizes == [(32, 16), (32, 16), (8, 8)]
    # a 32x16 picture letterboxed into 32x32: grey bands of 8 rows above and below
    assert np.all(batch.x[0, :, :8] == 0.5) and np.all(batch.x[0, :, 24:] == 0.5)
    assert batch.boxes[0].tolist() == [[1, .375, .5, .25, .5]]


# --------------------------------------------------------------------------- augmentation

def test_hsv_round_trip_and_darknet_hue_shift():
    rng = np.random.default_rng(0)
    im = rng.random((3, 5, 7), dtype=np.float32)
    im[:, 0, 0] = 0.4                                   # grey: hue undefined, s = 0
    back = augment.hsv_to_rgb(augment.rgb_to_hsv(im))
    np.testing.assert_allclose(back, im, atol=2e-6)
    red = np.zeros((3, 1, 1), np.float32)
    red[0] = 1
    assert augment.rgb_to_hsv(red).ravel().tolist() == [0, 1, 1]
    cyan = augment.distort_image(red, 0.5, 1, 1)
    np.testing.assert_allclose(cyan.ravel(), [0, 1, 1], atol=1e-6)
    bright = augment.distort_image(np.full((3, 1, 1), 0.6, np.float32), 0, 1, 2)
    assert bright.ravel().tolist() == [1, 1, 1]        # value 1.2, clipped


def test_place_image_is_darknets_resampling():
    im = np.arange(4, dtype=np.float32).reshape(1, 2, 2)    # [[0, 1], [2, 3]]
    canvas = np.full((1, 3, 5), 0.5, np.float32)
    augment.place_image(im, 4.7, 2.2, 1.9, 1, canvas)       # truncated: 4x2 at (1, 1)
    # column x reads im at x/4*2 = 0, .5, 1, 1.5 (bilinear, 0 outside)
    assert canvas[0, 1, 1:5].tolist() == [0, .5, 1, .5]
    assert canvas[0, 2, 1:5].tolist() == [2, 2.5, 3, 1.5]
    assert np.all(canvas[0, 0] == .5) and canvas[0, 1, 0] == .5


def test_crop_augmentation_is_the_identity_without_randomness():
    rng = np.random.default_rng(0)
    im = rng.random((3, 6, 6), dtype=np.float32)
    same = augment.random_augment_image(im, rng, 0, 1, 6, 6, 6, 6)
    assert np.array_equal(same, im)
    shifted = augment.rotate_crop_image(im, 0.0, 1.0, 6, 6, 1.0, 0.0, 1.0)
    assert np.array_equal(shifted[:, :, :5], im[:, :, 1:]) and np.all(shifted[:, :, 5] == 0)
    double = augment.rotate_crop_image(im, 0.0, 2.0, 6, 6, 0.0, 0.0, 1.0)
    # scale 2 around the centre: output pixel 3 reads input 3, pixel 4 reads 3.5
    assert double[0, 3, 3] == pytest.approx(im[0, 3, 3])
    assert double[0, 3, 4] == pytest.approx((im[0, 3, 3] + im[0, 3, 4]) / 2)


def test_place_boxes_maps_clips_flips_and_drops_slivers():
    rng = np.random.default_rng(0)
    box = np.array([[1, .3, .5, .2, .4]])
    # the picture was scaled to half size (sx = sy = .5) and placed .25 of the width right:
    # Darknet passes dx = -.25; left = .2*.5 + .25, right = .4*.5 + .25
    rows = augment.place_boxes(box, rng, False, -.25, 0, .5, .5, max_boxes=90)
    np.testing.assert_allclose(rows, [[.4, .25, .1, .2, 1]], atol=1e-6)
    flipped = augment.place_boxes(box, rng, True, -.25, 0, .5, .5, max_boxes=90)
    np.testing.assert_allclose(flipped, [[.6, .25, .1, .2, 1]], atol=1e-6)
    clipped = augment.place_boxes(np.array([[0, .9, .5, .2, .2]]), rng, False, -.55, 0, .5,
                                  .5, max_boxes=90)        # edges .95 and 1.05 -> 1
    np.testing.assert_allclose(clipped, [[.975, .25, .05, .1, 0]], atol=1e-6)
    outside = augment.place_boxes(np.array([[0, .9, .5, .2, .2]]), rng, False, -.75, 0, .5,
                                  .5, max_boxes=90)        # both edges past 1: width 0
    assert outside.shape == (0, 5)
