"""A synthetic video for the detector demo: the shapes of the detection set moving.

    python -m minidarknet.synthetic_video clip.mp4 [--frames 60 --size 64 --seed 0]

Three shapes (a circle, a square and a triangle, the classes of
`python -m minidarknet.synthetic detection`) of the detection set's sizes glide across a
noisy background, each in its own band, bouncing off the edges, drawn as that set's pictures are (same
colours, noise and supersampling).  ``make_video`` returns, per frame, the boxes
(class, x, y, w, h relative to the picture) that the labels of such a picture would hold.
Encoding needs PyAV (``pip install 'minidarknet[video]'``).
"""
import click
import numpy as np

from .synthetic import SHAPES, _colours, _finish, _paint, shape_mask


def shape_tracks(frames, size, seed=0, count=3):
    """Per frame, [(class, cx, cy, r, angle)] of `count` shapes, each gliding left and right
    in its own horizontal band (so they never overlap, as in the detection set), bouncing
    off the edges and bobbing up and down a little."""
    rng = np.random.default_rng([int(seed), 77])
    band = size / count
    r = rng.uniform(0.08, 0.12, count) * size
    cx = rng.uniform(r, size - r)
    speed = rng.uniform(0.8, 1.6, count) * rng.choice([-1, 1], count)
    phase = rng.uniform(0, 2 * np.pi, count)
    angle = rng.uniform(-10, 10, count)
    bob = np.maximum(band / 2 - r - 1, 0)
    tracks = []
    for t in range(frames):
        cy = (np.arange(count) + 0.5) * band + bob * np.sin(0.2 * t + phase)
        tracks.append([(k % 3, cx[k], cy[k], r[k], angle[k]) for k in range(count)])
        cx = cx + speed
        out = (cx < r) | (cx > size - r)
        speed[out] *= -1
        cx = np.clip(cx, r, size - r)
    return tracks


def make_video(path, *, frames=60, size=64, seed=0, fps=10):
    """Write the video; returns the per-frame label boxes."""
    from .video import _av, _codec
    av = _av()
    rng = np.random.default_rng([int(seed), 78])
    background, colours = _colours(rng, 3)
    labels = []
    with av.open(str(path), "w") as sink:
        stream = sink.add_stream(_codec(av), rate=fps)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for shapes in shape_tracks(frames, size, seed):
            picture = np.empty((size, size, 3))
            picture[...] = background
            boxes = []
            for label, cx, cy, r, angle in shapes:
                mask, (x0, y0, x1, y1) = shape_mask(SHAPES[label], cx, cy, r, angle, size, True)
                _paint(picture, mask, colours[label])
                boxes.append((label, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size,
                              (x1 - x0) / size, (y1 - y0) / size))
            labels.append(boxes)
            frame = av.VideoFrame.from_ndarray(_finish(rng, picture), format="rgb24")
            for packet in stream.encode(frame):
                sink.mux(packet)
        for packet in stream.encode(None):
            sink.mux(packet)
    return labels


@click.command()
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--frames", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--size", type=click.IntRange(min=16), default=64, show_default=True)
@click.option("--fps", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def main(out, frames, size, fps, seed):
    """Write a video of moving synthetic shapes to OUT (.mp4)."""
    if size % 2:
        raise click.BadParameter("must be even (H.264's yuv420p)", param_hint="--size")
    make_video(out, frames=frames, size=size, seed=seed, fps=fps)
    click.echo(f"{out}: {frames} frames of {size}x{size} at {fps} frames/s")


if __name__ == "__main__":
    main()
