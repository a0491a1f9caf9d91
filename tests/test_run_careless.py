"""`minidarknet run` with careless input (issue 9): random weights, unreadable images, missing
folders, pictures of many-channel layers, re-runs into an existing --out, large --save."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import minidarknet
from conftest import ROOT
from minidarknet.cli import main

SAMPLE = ROOT / "data" / "sample.jpg"
DETECTOR = ROOT / "cfg" / "demo-detector.cfg"


def cli(*args):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


def only_error_line(capsys, *words):
    err = [l for l in capsys.readouterr().err.splitlines() if not l.startswith("warning: ")]
    assert len(err) == 1 and err[0].startswith("error: "), err
    for word in words:
        assert word in err[0], err
    return err[0]


def test_detector_with_random_weights_says_so_and_does_not_crash(tmp_path, capsys):
    # the random initial values overflow exp() in the box sizes: boxes over the whole image
    assert cli("run", DETECTOR, SAMPLE, "--out", tmp_path / "p.png") == 0
    captured = capsys.readouterr()
    assert "warning: no weights given (--weights): the outputs come from the random " \
           "initial values" in captured.err
    assert "boxes drawn in" in captured.out and "Traceback" not in captured.err
    # --json stays strict JSON: an infinite box size is null, never Infinity
    assert cli("run", DETECTOR, SAMPLE, "--json", "--out", tmp_path / "p.png") == 0
    line = capsys.readouterr().out.strip()

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON output")

    record = json.loads(line, parse_constant=refuse)
    assert record["detections"]


def test_nan_output_is_an_error_naming_the_first_layer(tmp_path, write_cfg, capsys):
    cfg = write_cfg("[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=2\nsize=1\n"
                    "activation=linear\n[convolutional]\nfilters=2\nsize=1\n"
                    "activation=linear\n")
    net = minidarknet.load(cfg)
    net.layers[1].biases[0] = np.nan
    weights = tmp_path / "nan.weights"
    net.save_weights(weights)
    assert cli("run", cfg, SAMPLE, "--weights", weights) == 2
    only_error_line(capsys, "sample.jpg: the output has NaN or inf values, first in layer 1 "
                            "(convolutional)")


@pytest.mark.parametrize("content,why", [(b"", "empty file"),
                                         (b"<html><body>404</body></html>", "not a picture")])
def test_unreadable_single_image_is_one_line_exit_2(tmp_path, capsys, content, why):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    assert cli("run", ROOT / "cfg" / "l2.cfg", bad) == 2
    only_error_line(capsys, f"{bad}: cannot read image: {why}")


def test_decompression_bomb_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (200, 200)).save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)     # 40000 > 2 x 100: refused
    assert cli("run", ROOT / "cfg" / "l2.cfg", bomb) == 2
    only_error_line(capsys, f"{bomb}: cannot read image: too large")


def test_no_readable_image_among_many_is_exit_2(tmp_path, capsys):
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"")
    assert cli("run", ROOT / "cfg" / "l2.cfg", tmp_path / "a.jpg", tmp_path / "b.jpg") == 2
    only_error_line(capsys, "no image could be read")


def test_save_into_a_missing_folder_is_refused_up_front(tmp_path, capsys):
    target = tmp_path / "missing" / "out.npy"
    assert cli("run", ROOT / "cfg" / "l2.cfg", SAMPLE, "--save", target) == 2
    line = only_error_line(capsys, f"the folder {target.parent} does not exist")
    assert ".tmp-" not in line


def test_save_picture_of_a_many_channel_layer_is_refused_before_the_forward_pass(
        write_cfg, capsys, monkeypatch):
    cfg = write_cfg("[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=32\n"
                    "size=1\nactivation=linear\n")
    calls = []
    monkeypatch.setattr(minidarknet.Network, "forward", lambda *a, **k: calls.append(1))
    assert cli("run", cfg, SAMPLE, "--layer", 0, "--save", "x.png") == 2
    only_error_line(capsys, "outputs 32 x 8 x 8, not a 1- or 3-channel picture")
    assert calls == []


def test_a_failing_rerun_leaves_results_jsonl_and_resume_adds_the_rest(tmp_path, capsys):
    cfg = ROOT / "cfg" / "l2.cfg"
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (12, 10), (40 * i, 80, 120)).save(images / f"im{i}.png")
    out = tmp_path / "out"
    assert cli("run", cfg, images / "im0.png", images / "im1.png", "--out", out) == 0
    jsonl = out / "results.jsonl"
    before = jsonl.read_text()
    assert len(before.splitlines()) == 2
    # a re-run that fails before reading anything (bad weights) leaves the results alone
    assert cli("run", cfg, images, "--out", out, "--weights", tmp_path / "none.weights") == 2
    assert jsonl.read_text() == before
    capsys.readouterr()
    assert cli("run", cfg, images, "--out", out, "--resume") == 0
    assert "resuming: 2 images already in" in capsys.readouterr().err
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [Path_name(r["image"]) for r in records] == ["im0.png", "im1.png", "im2.png"]


def Path_name(text):
    return os.path.basename(text)


def test_save_npy_streams_rows_and_keeps_memory_to_one_output(tmp_path, write_cfg,
                                                               monkeypatch):
    from minidarknet.commands import run as run_module
    cfg = write_cfg("[net]\nwidth=8\nheight=6\nchannels=3\n[l2norm]\n")
    pictures = []
    for i in range(5):
        path = tmp_path / f"p{i}.png"
        Image.new("RGB", (8, 6), (10 + 40 * i, 200, 30)).save(path)
        pictures.append(path)
    appended = []
    original = run_module.NpyStream.append
    monkeypatch.setattr(run_module.NpyStream, "append",
                        lambda self, row: (appended.append(self.file.tell()),
                                           original(self, row)))
    out = tmp_path / "all.npy"
    assert cli("run", cfg, *pictures, "--batch", 2, "--save", out) == 0
    saved = np.load(out)
    assert saved.shape == (5, 3, 6, 8)
    # each row went to the file as it came (the file grew by one row per image)
    assert appended == [i * 3 * 6 * 8 * 4 for i in range(5)]
    net = minidarknet.load(cfg)
    from minidarknet.image import letterbox_image, load_image
    np.testing.assert_allclose(saved[4], net.forward(letterbox_image(load_image(pictures[4]),
                                                                     8, 6))[0], rtol=1e-6)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_a_network_without_parameters_needs_no_weights_warning(capsys):
    # cfg/l2.cfg (the README's first command) has nothing to load: no "random weights" warning
    assert cli("run", ROOT / "cfg" / "l2.cfg", SAMPLE) == 0
    assert "no weights given" not in capsys.readouterr().err
