"""`minidarknet run CFG video.mp4 --out DIR` (PyAV) and --names from --data."""
import json
import sys

import numpy as np
import pytest
from PIL import Image

from minidarknet.cli import main
from tests.squares import draw_squares, moving_squares, square_detector, write_video

FRAMES = 8


def cli(args, capsys):
    with pytest.raises(SystemExit) as done:
        main(args)
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


@pytest.fixture
def detector(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg, weights = square_detector(tmp_path)
    (tmp_path / "names.txt").write_text("square\n")
    (tmp_path / "sq.data").write_text("classes=1\nnames=names.txt\n")
    return cfg, weights


def test_video_boxes_follow_the_moving_squares(detector, tmp_path, capsys):
    av = pytest.importorskip("av")
    cfg, weights = detector
    corners = moving_squares(FRAMES)
    write_video(tmp_path / "clip.mp4", corners)
    code, out, err = cli(["run", str(cfg), "clip.mp4", "-w", str(weights), "--out", "res",
                          "--data", "sq.data", "--batch", "3"], capsys)
    assert code == 0, err
    assert f"clip.mp4: {FRAMES} frames in" in err and "frames/s" in err
    lines = (tmp_path / "res" / "results.jsonl").read_text().splitlines()
    assert len(lines) == FRAMES
    for i, (line, frame_corners) in enumerate(zip(lines, corners)):
        record = json.loads(line)
        assert record["frame"] == i and record["size"] == [64, 64]
        assert record["time"] == pytest.approx(i / 10)
        found = sorted((d["x"] * 64, d["y"] * 64) for d in record["detections"])
        expected = sorted((x + 8, y + 8) for x, y in frame_corners)
        np.testing.assert_allclose(found, expected, atol=1.0)
        assert all(d["classes"][0]["name"] == "square" and d["classes"][0]["prob"] > .9
                   for d in record["detections"])
    with av.open(str(tmp_path / "res" / "clip.mp4")) as drawn:
        stream = drawn.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in drawn.decode(stream)]
    assert len(frames) == FRAMES and frames[0].shape == (64, 64, 3)
    # the boxes are drawn in the class colour around the squares: the first frame's pixels
    # just outside the first square are coloured, not black as in the source
    x, y = corners[0][0]
    ring = frames[0][y + 16, x:x + 16].astype(int)
    source = draw_squares(corners[0])[y + 16, x:x + 16].astype(int)
    assert source.max() == 0 and ring.max() > 100


def test_video_needs_the_extra_and_an_out_folder(detector, tmp_path, capsys, monkeypatch):
    cfg, weights = detector
    monkeypatch.setitem(sys.modules, "av", None)         # as if PyAV were not installed
    (tmp_path / "clip.mp4").write_bytes(b"")
    code, _, err = cli(["run", str(cfg), "clip.mp4", "-w", str(weights), "--out", "res"],
                       capsys)
    assert code == 2 and err == "error: video files need PyAV: pip install " \
                                "'minidarknet[video]'\n"
    code, _, err = cli(["run", str(cfg), "clip.mp4", "-w", str(weights)], capsys)
    assert code == 2 and "video files need --out DIR" in err


def test_names_default_to_the_data_files_names(detector, tmp_path, capsys):
    cfg, weights = detector
    Image.fromarray(draw_squares([(18, 18)])).save(tmp_path / "one.png")
    code, out, err = cli(["run", str(cfg), "one.png", "-w", str(weights), "--json",
                          "--data", "sq.data"], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert [d["classes"][0]["name"] for d in record["detections"]] == ["square"]
    assert record["detections"][0]["left"] == 18


def test_synthetic_video_frames_and_labels(tmp_path):
    av = pytest.importorskip("av")
    from minidarknet.synthetic_video import make_video
    labels = make_video(tmp_path / "s.mp4", frames=5, size=64, seed=1)
    with av.open(str(tmp_path / "s.mp4")) as source:
        frames = [f.to_ndarray(format="rgb24") for f in source.decode(source.streams.video[0])]
    assert len(frames) == len(labels) == 5 and frames[0].shape == (64, 64, 3)
    for boxes in labels:
        assert [b[0] for b in boxes] == [0, 1, 2]
        rows = np.array([b[1:] for b in boxes])
        # inside the picture, of the detection set's sizes, one per band: no overlaps
        assert (rows[:, 0] - rows[:, 2] / 2 >= 0).all() and (rows[:, 0] + rows[:, 2] / 2 <= 1).all()
        assert (rows[:, 2] > .12).all() and (rows[:, 2] < .3).all()
        tops, bottoms = rows[:, 1] - rows[:, 3] / 2, rows[:, 1] + rows[:, 3] / 2
        assert (bottoms[:-1] < tops[1:]).all()
    # the shapes move: the first one's centre changes from frame to frame
    xs = [boxes[0][1] for boxes in labels]
    assert len(set(np.round(xs, 3))) == 5
