"""A hand-built detector of white squares on black, and pictures for it (no training).

The network (64x64 input): one convolution of 16x16 windows, stride 4 and padding 6, so
that window i covers pixels [4i - 6, 4i + 10) and is centred where the [yolo] head puts the
centre of cell i (16 x 16 grid); its objectness logit is 20 * (mean brightness of the
window - 0.7), its x, y, w, h logits 0 (a 16 x 16 box, the anchor, at the cell centre) and
its class logit 10.  A white 16 x 16 square thus fires the windows that it covers by more
than 70 %, the most for the window most aligned with it, and NMS keeps that one: one box per
square, its centre within 2 pixels of the square's.
"""
import numpy as np
from PIL import Image

import minidarknet

SIZE, SIDE = 64, 16

CFG = """[net]
batch=4
width=64
height=64
channels=3

[convolutional]
filters=6
size=16
stride=4
padding=6
activation=linear

[yolo]
mask=0
anchors=16,16
classes=1
num=1
"""


def square_detector(folder):
    """Write squares.cfg and squares.weights into `folder`; returns their paths."""
    cfg = folder / "squares.cfg"
    cfg.write_text(CFG)
    net = minidarknet.load(cfg)
    conv = net.layers[0]
    conv.weights[...] = 0
    conv.weights.reshape(6, -1)[4] = 20 / (3 * SIDE * SIDE)
    conv.biases[...] = [0, 0, 0, 0, -14, 10]
    net.save_weights(folder / "squares.weights")
    return cfg, folder / "squares.weights"


def draw_squares(corners, size=SIZE, side=SIDE):
    """uint8 (size, size, 3) picture with white squares at top-left `corners`."""
    picture = np.zeros((size, size, 3), np.uint8)
    for x, y in corners:
        picture[y:y + side, x:x + side] = 255
    return picture


def squares_set(folder, count, seed=0):
    """`count` pictures with 1-2 squares (YOLO labels beside them, numbered names) and a
    .data file; returns the .data path."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        corners = [(int(rng.integers(0, 20)), int(rng.integers(0, 48)))]
        if rng.random() < .5:
            corners.append((int(rng.integers(36, 48)), int(rng.integers(0, 48))))
        path = folder / f"img_{index + 1:03d}.png"
        Image.fromarray(draw_squares(corners)).save(path)
        (folder / f"img_{index + 1:03d}.txt").write_text("".join(
            f"0 {(x + SIDE / 2) / SIZE:.6f} {(y + SIDE / 2) / SIZE:.6f} {SIDE / SIZE:.6f} "
            f"{SIDE / SIZE:.6f}\n" for x, y in corners))
        paths.append(str(path))
    (folder / "list.txt").write_text("\n".join(paths) + "\n")
    (folder / "names.txt").write_text("square\n")
    data = folder / "squares.data"
    data.write_text(f"classes=1\ntrain={folder / 'list.txt'}\nvalid={folder / 'list.txt'}\n"
                    f"names={folder / 'names.txt'}\n")
    return data


def moving_squares(frames):
    """Top-left corners of two squares in each frame (at most 11): one going right along the
    top, one going up on the right, 4 pixels a frame, on the windows' grid (corners at
    2 mod 4), where exactly one window covers each square."""
    return [[(2 + 4 * i, 6), (46, 46 - 4 * i)] for i in range(frames)]


def write_video(path, corners, fps=10, codec="mpeg4"):
    """Encode the squares at `corners` (one list per frame) with PyAV."""
    import av
    with av.open(str(path), "w") as sink:
        stream = sink.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.bit_rate = 2_000_000
        for frame_corners in corners:
            frame = av.VideoFrame.from_ndarray(draw_squares(frame_corners), format="rgb24")
            for packet in stream.encode(frame):
                sink.mux(packet)
        for packet in stream.encode(None):
            sink.mux(packet)
