"""Synthetic data sets: deterministic, in Darknet's formats, labels that match the pictures."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minidarknet.errors import DataError
from minidarknet.synthetic import (SHAPES, generate, main, make_arrays, make_detection,
                                   make_shapes, shape_mask)


def read_data_file(path):
    return dict(line.strip().split("=", 1) for line in Path(path).read_text().splitlines())


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes().replace(str(folder).encode(), b"ROOT"))
    return h.hexdigest()


def test_shapes_is_darknet_classifier_data(tmp_path):
    result = make_shapes(tmp_path / "set", classes=4, train=24, valid=8, size=24, seed=3)
    options = read_data_file(result.data)
    assert options["classes"] == "4"
    labels = Path(options["labels"]).read_text().split()
    assert labels == ["circle", "square", "triangle", "cross"] == result.names
    train = Path(options["train"]).read_text().splitlines()
    valid = Path(options["valid"]).read_text().splitlines()
    assert len(train) == 24 and len(valid) == 8
    for path in train + valid:
        # Darknet's rule: the label is the one label name found in the path
        assert sum(name in path for name in labels) == 1
        with Image.open(path) as im:
            assert im.size == (24, 24) and im.mode == "RGB"
    assert len({p.rsplit("_", 1)[1] for p in train}) > 1      # several classes drawn


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = make_shapes(tmp_path / "a", classes=3, train=6, valid=2, size=16, seed=1)
    b = make_shapes(tmp_path / "b", classes=3, train=6, valid=2, size=16, seed=1)
    c = make_shapes(tmp_path / "c", classes=3, train=6, valid=2, size=16, seed=2)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    assert a.names == b.names == c.names


def test_label_names_in_the_folder_path_are_refused(tmp_path):
    with pytest.raises(DataError, match="exactly one"):
        make_shapes(tmp_path / "my_circle_set", classes=2, train=2, valid=1)


def test_every_shape_is_drawn_and_the_shapes_differ():
    masks = [shape_mask(name, 16, 16, 12, 0.0, 32) for name in SHAPES]
    for name, mask in zip(SHAPES, masks):
        assert 0.1 < mask.mean() < 0.6, name
        assert mask.max() == pytest.approx(1.0)
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert np.abs(masks[i] - masks[j]).mean() > 0.04, (SHAPES[i], SHAPES[j])
    with pytest.raises(ValueError, match="unknown shape"):
        shape_mask("blob", 16, 16, 12, 0.0, 32)


def test_detection_labels_are_yolo_boxes_around_the_shapes(tmp_path):
    result = make_detection(tmp_path / "det", classes=3, train=10, valid=4, size=48,
                            max_objects=3, seed=5)
    options = read_data_file(result.data)
    assert options["classes"] == "3"
    assert Path(options["names"]).read_text().split() == ["circle", "square", "triangle"]
    paths = Path(options["train"]).read_text().splitlines()
    assert len(paths) == 10
    counts = []
    for path in paths:
        rows = [line.split() for line in Path(path).with_suffix(".txt").read_text().splitlines()]
        counts.append(len(rows))
        picture = np.asarray(Image.open(path), np.float32)
        background = np.median(picture.reshape(-1, 3), axis=0)
        for row in rows:
            c, x, y, w, h = int(row[0]), *map(float, row[1:])
            assert 0 <= c < 3
            assert 0 < w < 1 and 0 < h < 1 and 0 <= x - w / 2 and x + w / 2 <= 1
            # the box centre differs from the background (a shape is there), its surroundings
            # outside the box mostly do not
            cx, cy = int(x * 48), int(y * 48)
            assert np.abs(picture[cy, cx] - background).max() > 30 or c == 2
            left, top = int((x - w / 2) * 48), int((y - h / 2) * 48)
            right, bottom = int(np.ceil((x + w / 2) * 48)), int(np.ceil((y + h / 2) * 48))
            box = np.abs(picture[top:bottom, left:right] - background).max(axis=2) > 40
            assert box.mean() > 0.3
    assert 1 <= min(counts) and max(counts) <= 3 and len(set(counts)) > 1


def test_detection_box_fits_a_circle_exactly(tmp_path):
    mask, box = shape_mask("circle", 20.0, 24.0, 8.0, 0.0, 48, with_box=True)
    assert box == (12, 16, 28, 32)
    assert mask[16:32, 12:28].sum() == pytest.approx(np.pi * 64, rel=0.02)
    assert mask.sum() == pytest.approx(np.pi * 64, rel=0.02)
    _, box = shape_mask("square", 20.0, 24.0, 10.0, 0.0, 48, with_box=True)
    assert box == pytest.approx((12, 16, 28, 32), abs=0.26)


def test_arrays_are_npz_with_x_and_integer_y(tmp_path):
    result = make_arrays(tmp_path / "arr", classes=5, shape=(1, 4, 4), train=50, valid=20,
                         seed=2)
    with np.load(result.data) as train, np.load(result.valid) as valid:
        assert train["x"].shape == (50, 1, 4, 4) and train["x"].dtype == np.float32
        assert train["y"].shape == (50,) and train["y"].dtype == np.int64
        assert valid["x"].shape == (20, 1, 4, 4)
        assert set(train["y"]) <= set(range(5)) and len(set(train["y"])) > 2
        # learnable: the nearest class mean (after removing the scale) predicts the class
        x = train["x"].reshape(50, -1)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        means = np.stack([x[train["y"] == k].mean(0) for k in range(5)])
        v = valid["x"].reshape(20, -1)
        assert (np.argmax(v @ means.T, axis=1) == valid["y"]).mean() > 0.6
    again = make_arrays(tmp_path / "arr2", classes=5, shape=(1, 4, 4), train=50, valid=20,
                        seed=2)
    with np.load(result.data) as a, np.load(again.data) as b:
        assert np.array_equal(a["x"], b["x"])


def test_generate_dispatches_and_checks_the_kind(tmp_path):
    result = generate("arrays", tmp_path / "g", shape="1x2x2", classes=3, train=4, valid=2)
    with np.load(result.data) as data:
        assert data["x"].shape == (4, 1, 2, 2)
    with pytest.raises(ValueError, match="unknown synthetic data set"):
        generate("digits", tmp_path / "x")


def test_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["shapes", str(tmp_path / "s"), "--classes", "2", "--train", "3", "--valid", "1",
              "--size", "16"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "3 training and 1 validation samples, classes: circle, square" in out
    assert "shapes.data" in out
    assert len((tmp_path / "s" / "train.txt").read_text().splitlines()) == 3
    with pytest.raises(SystemExit):
        main(["arrays", str(tmp_path / "a"), "--shape", "6", "--train", "4", "--valid", "2"])
    with np.load(tmp_path / "a" / "train.npz") as data:
        assert data["x"].shape == (4, 6)
