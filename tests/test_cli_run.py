"""`minidarknet run` and `minidarknet info` as a user calls them (through cli.main)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import minidarknet
from conftest import ROOT
from minidarknet.cli import main
from minidarknet.image import letterbox_image, load_image

SAMPLE = ROOT / "data" / "sample.jpg"


def cli(*args):
    """Run the CLI in-process; returns the exit status."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


@pytest.fixture
def picture(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "pic.png"
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_l2_example_writes_the_normalised_picture(tmp_path, capsys):
    out = tmp_path / "l2.png"
    assert cli("run", ROOT / "cfg" / "l2.cfg", SAMPLE, "--save", out) == 0
    text = capsys.readouterr().out
    assert "layer 0 (l2norm) output 3 x 240 x 320" in text
    saved = np.asarray(Image.open(out), dtype=np.float32) / 255
    net = minidarknet.load(ROOT / "cfg" / "l2.cfg")
    expected = net.forward(letterbox_image(load_image(SAMPLE), 320, 240))[0]
    assert saved.shape == (240, 320, 3)
    # the picture is the output itself, quantised to bytes
    assert np.max(np.abs(saved.transpose(2, 0, 1) - expected)) <= 1 / 255 + 1e-6
    # and each pixel of the output is a unit vector across the channels
    assert np.allclose((expected ** 2).sum(axis=0), 1, atol=1e-5)


def test_save_npy_stacks_every_image_and_layer_picks_an_intermediate(tmp_path, write_cfg,
                                                                     picture):
    cfg = write_cfg("[net]\nwidth=8\nheight=6\nchannels=3\n[l2norm]\n[avgpool]\n")
    out = tmp_path / "out.npy"
    assert cli("run", cfg, picture, picture, "--save", out, "--layer", 0) == 0
    saved = np.load(out)
    assert saved.shape == (2, 3, 6, 8)
    x = letterbox_image(load_image(picture), 8, 6)
    net = minidarknet.load(cfg)
    net.forward(x)
    np.testing.assert_allclose(saved[0], net.layers[0].output[0], rtol=1e-6)
    np.testing.assert_allclose(saved[1], saved[0])


def test_classifier_prints_top_classes_with_names(tmp_path, write_cfg, picture, capsys):
    cfg = write_cfg("[net]\nwidth=4\nheight=4\nchannels=3\n[connected]\noutput=6\n"
                    "activation=linear\n[softmax]\n")
    names = tmp_path / "names.txt"
    names.write_text("zero\none\ntwo\nthree\nfour\nfive\n")
    net = minidarknet.load(cfg, seed=3)
    weights = tmp_path / "w.weights"
    net.save_weights(weights)
    assert cli("run", cfg, picture, "--weights", weights, "--names", names, "--top", 3,
               "--json") == 0
    record = json.loads(capsys.readouterr().out.strip())
    probs = net.forward(letterbox_image(load_image(picture), 4, 4)).ravel()
    best = np.argsort(-probs)[:3]
    assert [t["id"] for t in record["top"]] == best.tolist()
    assert [t["name"] for t in record["top"]] == [names.read_text().split()[j] for j in best]
    assert record["top"][0]["prob"] == pytest.approx(float(probs[best[0]]), rel=1e-6)


def test_folder_run_writes_json_lines_and_skips_unreadable_images(tmp_path, write_cfg,
                                                                  picture, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "c.png", "d.png"):
        (folder / name).write_bytes(picture.read_bytes())
    (folder / "b.jpg").write_bytes(b"not an image")
    cfg = write_cfg("[net]\nwidth=8\nheight=8\nchannels=3\n[l2norm]\n")
    out = tmp_path / "results"
    assert cli("run", cfg, folder, "--out", out, "--batch", 2) == 0
    err = capsys.readouterr().err
    assert "skipping" in err and "b.jpg" in err
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["image"].rsplit("/", 1)[-1] for r in records] == ["a.png", "c.png", "d.png"]
    assert all(r["shape"] == [3, 8, 8] for r in records)


def test_picture_of_a_non_image_output_is_refused(tmp_path, write_cfg, picture, capsys):
    cfg = write_cfg("[net]\nwidth=4\nheight=4\nchannels=3\n[connected]\noutput=5\n")
    assert cli("run", cfg, picture, "--save", tmp_path / "x.png") == 2
    assert "not a 1- or 3-channel picture" in capsys.readouterr().err


def test_one_channel_network_gets_luminance(tmp_path, write_cfg, capsys):
    path = tmp_path / "red.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(path)
    cfg = write_cfg("[net]\nwidth=4\nheight=4\nchannels=1\n[avgpool]\n")
    assert cli("run", cfg, path, "--json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["mean"] == pytest.approx(77 / 256, rel=1e-5)


def test_bad_inputs_exit_2_with_one_line(tmp_path, write_cfg, picture, capsys):
    cfg = write_cfg("[net]\nwidth=4\nheight=4\nchannels=3\n[l2norm]\nbackward=sideways\n")
    assert cli("run", cfg, picture) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and ":6:" in err[0]
    good = write_cfg("[net]\nwidth=4\nheight=4\nchannels=3\n[l2norm]\n", "good.cfg")
    assert cli("run", good, tmp_path / "missing.png") != 0
    assert cli("run", good, picture, "--layer", 5) == 2


def test_info_prints_the_layer_table(write_cfg, capsys):
    cfg = write_cfg("[net]\nwidth=8\nheight=8\nchannels=1\n[connected]\noutput=16\n"
                    "batch_normalize=1\n[l2norm]\n[connected]\noutput=4\n[softmax]\n")
    assert cli("info", cfg) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["0", "connected"] and "64 -> 16" in lines[1]
    assert lines[2].split()[:2] == ["1", "l2norm"]
    assert lines[4].split()[:2] == ["3", "softmax"]
    params = (16 + 64 * 16 + 3 * 16) + (4 + 16 * 4)
    assert f"parameters: {params:,}" in "\n".join(lines)
    assert lines[-1].startswith("runtime: numpy ") and "compiled kernels: " in lines[-1]
    assert cli("info", cfg, "--json") == 0
    table = json.loads(capsys.readouterr().out)
    assert [r["type"] for r in table["layers"]] == ["connected", "l2norm", "connected", "softmax"]
    assert table["parameters"] == params
    assert table["runtime"]["threads"] >= 1 and table["runtime"]["kernels"]


def test_checkout_cli_script_is_the_same_command(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "info",
                             str(ROOT / "cfg" / "mlp.cfg")], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "l2norm" in result.stdout and "total BFLOPs" in result.stdout
    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=4\nheight=4\nchannels=3\n[nosuchlayer]\n")
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "info", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {bad}:5: unknown section type [nosuchlayer]"
    assert "Traceback" not in result.stderr


DETECTOR = """[net]
width=32
height=32
channels=3
[convolutional]
filters=7
size=1
stride=1
activation=linear
[maxpool]
size=8
stride=8
[yolo]
mask=0
anchors=16,12
classes=2
num=1
"""


def red_square_detector(tmp_path, write_cfg):
    """A yolo net whose objectness is high only where the input is pure red, and which calls
    everything class 0: a picture with one red square gives exactly one box."""
    cfg = write_cfg(DETECTOR, "detector.cfg")
    net = minidarknet.load(cfg)
    conv = net.layers[0]
    conv.weights[...] = 0
    conv.biases[...] = 0
    conv.weights[4, :, 0, 0] = [20, -10, -10]     # objectness logit: 10 on red, <= 0 elsewhere
    conv.biases[4] = -10
    conv.biases[5], conv.biases[6] = 10, -10        # class 0 sure, class 1 never
    weights = tmp_path / "detector.weights"
    net.save_weights(weights)
    picture = tmp_path / "scene.png"
    scene = Image.new("RGB", (320, 240), (255, 255, 255))
    # Darknet's maxpool pads size-1 = 7 in total, so its 8x8 windows start at -3: window
    # (row 1, col 2) covers x 13..20, y 5..12 of the letterboxed 32x32 input (x10, y-4 here).
    scene.paste((255, 0, 0), (145, 25, 185, 65))
    scene.save(picture)
    return cfg, weights, picture


def test_detector_draws_the_boxes_that_net_detections_finds(tmp_path, write_cfg, capsys):
    from minidarknet.boxes import class_color
    cfg, weights, picture = red_square_detector(tmp_path, write_cfg)
    names = tmp_path / "names.txt"
    names.write_text("red thing\nother\n")
    drawn = tmp_path / "boxes.png"
    assert cli("run", cfg, picture, "--weights", weights, "--names", names, "--out", drawn,
               "--json") == 0
    record = json.loads(capsys.readouterr().out)

    net = minidarknet.load(cfg, weights)
    image = load_image(picture)
    net.forward(letterbox_image(image, 32, 32))
    expected = [d for d in net.detections(thresh=.5, image_size=(320, 240))
                if (d.prob > .5).any()]
    assert len(expected) == 1 and len(record["detections"]) == 1
    box = record["detections"][0]
    left, top, right, bottom = expected[0].to_pixels(320, 240)
    assert (box["left"], box["top"], box["right"], box["bottom"]) == (left, top, right, bottom)
    assert box["classes"] == [{"id": 0, "prob": pytest.approx(float(expected[0].prob[0])),
                               "name": "red thing"}]
    # the box sits on the red square: centre of the cell it fell in, anchor-sized
    assert box["x"] == pytest.approx(2.5 / 4) and box["y"] == pytest.approx((1.5 * 8 - 4) / 24)
    assert box["w"] == pytest.approx(.5) and box["h"] == pytest.approx(12 / 32 * 32 / 24)

    out = np.asarray(Image.open(drawn).convert("RGB"))
    colour = np.array(class_color(0, 2))
    assert out.shape == (240, 320, 3)
    # the outline is drawn in the class colour along all four sides of the reported box
    for y, x in ((bottom, (left + right) // 2), ((top + bottom) // 2, left),
                 ((top + bottom) // 2, right)):
        assert np.array_equal(out[y, x], colour), (y, x, out[y, x])
    # and nothing is drawn far away from it
    assert np.array_equal(out[5, 5], [255, 255, 255])


def test_detector_text_output_and_default_picture(tmp_path, write_cfg, capsys, monkeypatch):
    cfg, weights, picture = red_square_detector(tmp_path, write_cfg)
    monkeypatch.chdir(tmp_path)
    assert cli("run", cfg, picture, "--weights", weights) == 0
    out = capsys.readouterr().out
    assert "class 0: 100%" in out
    assert (tmp_path / "predictions.png").exists()

