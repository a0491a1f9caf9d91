"""Detection on video files (Darknet's `detector demo` on a file, without a window).

    run_video(net, "clip.mp4", "out/", batch=8, thresh=.5, names=names, jsonl=handle)

Frames are decoded with PyAV (FFmpeg; the optional extra ``video``: ``pip install
'minidarknet[video]'``), fitted to the network like pictures (letterbox by default), run
``batch`` frames per forward pass, and their boxes drawn (as `run` draws them) into
``out/<video name>.mp4`` (H.264, same size and frame rate) while one JSON line per frame
goes to the results file: ``{"video", "frame", "time", "size", "detections": [...]}`` with
the detections as `run --json` gives them.  The video is written to a temporary file and
renamed when complete, so an interrupted run leaves no half-written file under the final
name.  A progress bar on stderr shows the frames done and frames per second.
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .atomic import _mode_for
from .errors import ImageError, MiniDarknetError

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".ts", ".3gp"}
CODECS = ("libx264", "h264", "mpeg4")     # the first one this FFmpeg build can encode


def is_video(path):
    return Path(os.fspath(path)).suffix.lower() in VIDEO_SUFFIXES


def _av():
    try:
        import av
    except ImportError:
        raise MiniDarknetError("video files need PyAV: pip install 'minidarknet[video]'") \
            from None
    return av


def _codec(av):
    for name in CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises its own types for unknown codecs
            continue
    raise MiniDarknetError(f"this FFmpeg build (PyAV {av.__version__}) has none of the "
                           f"encoders {', '.join(CODECS)}")


class _Progress:
    """frames done / total, with frames per second, on one stderr line."""

    def __init__(self, name, total, stream=None):
        self.name, self.total = name, total
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.begun = self.last = time.perf_counter()

    def update(self, done, final=False):
        now = time.perf_counter()
        if not final and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        rate = done / max(now - self.begun, 1e-9)
        if self.total:
            filled = int(20 * min(done, self.total) / self.total)
            bar = f"[{'#' * filled}{'.' * (20 - filled)}] {done}/{self.total}"
        else:
            bar = f"{done}"
        line = f"{self.name}: {bar} frames, {rate:.1f} frames/s"
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r" if self.tty else "") + line + end)
        self.stream.flush()


def run_video(net, path, out_dir, *, jsonl, thresh=0.5, hier=0.5, nms=0.45, names=None,
              mode="letterbox", progress=True):
    """Run the detector `net` (its batch is the frames per forward) on the video `path`;
    writes out_dir/<stem>.mp4 and a JSON line per frame to the open file `jsonl`.
    Returns (frames, seconds, output path)."""
    av = _av()
    from .boxes import draw_detections
    from .image import prepare_image, to_channels
    from .detect import batch_detections
    path = os.fspath(path)
    try:
        source = av.open(path)
    except Exception as e:  # noqa: BLE001 - FileNotFoundError, av.error.* for bad data
        why = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise ImageError(f"{path}: cannot read video: {why}") from None
    out_path = os.path.join(out_dir, Path(path).stem + ".mp4")
    if os.path.exists(out_path) and os.path.samefile(out_path, path):
        source.close()
        raise MiniDarknetError(f"{out_path}: is the video being read; give another --out")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".mp4", dir=out_dir)
    os.close(fd)
    os.chmod(tmp, _mode_for(out_path))          # mkstemp's 0600 would make the video private
    began = time.perf_counter()
    count = 0
    try:
        with source:
            if not source.streams.video:
                raise ImageError(f"{path}: cannot read video: no video stream")
            stream = source.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 25
            bar = _Progress(Path(path).name, stream.frames) if progress else None
            with av.open(tmp, "w", format="mp4") as sink:
                encoder = None
                pending = []         # (index, time, PIL frame)

                def flush():
                    nonlocal encoder
                    inputs = [to_channels(prepare_image(_chw(im), net.w, net.h, mode), net.c,
                                          path) for _, _, im in pending]
                    x = np.stack(inputs + [inputs[-1]] * (net.batch - len(inputs)))
                    net.forward(x)
                    sizes = [im.size for _, _, im in pending]
                    found = batch_detections(net, thresh=thresh, hier=hier, nms=nms,
                                             image_sizes=sizes + [sizes[-1]] *
                                             (net.batch - len(sizes)),
                                             letterbox=mode == "letterbox")
                    for (index, seconds, im), dets in zip(pending, found):
                        kept = [d for d in dets if (d.prob > thresh).any()]
                        shown = names or [f"class {j}" for j in
                                          range(kept[0].classes if kept else 0)]
                        w, h = im.size
                        jsonl.write(json.dumps({
                            "video": path, "frame": index, "time": seconds, "size": [w, h],
                            "detections": [d.to_dict(shown, w, h) for d in kept]}) + "\n")
                        drawn = draw_detections(im, kept, shown, thresh)
                        if encoder is None:
                            encoder = _open_encoder(av, sink, rate, w, h)
                        frame = av.VideoFrame.from_image(drawn)
                        for packet in encoder.encode(frame):
                            sink.mux(packet)
                    pending.clear()

                for frame in source.decode(stream):
                    seconds = float(frame.time) if frame.time is not None else None
                    pending.append((count, seconds, frame.to_image()))
                    count += 1
                    if len(pending) == net.batch:
                        flush()
                        if bar:
                            bar.update(count)
                if pending:
                    flush()
                if encoder is None:
                    raise ImageError(f"{path}: cannot read video: no frames")
                for packet in encoder.encode(None):
                    sink.mux(packet)
        os.replace(tmp, out_path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, av.error.FFmpegError):
            raise ImageError(f"{path}: cannot decode video at frame {count}: "
                             f"{str(e).splitlines()[0]}") from None
        raise
    seconds = time.perf_counter() - began
    if bar:
        bar.update(count, final=True)
    return count, seconds, out_path


def _chw(pil):
    from .image import to_chw
    return to_chw(pil)


def _open_encoder(av, sink, rate, width, height):
    stream = sink.add_stream(_codec(av), rate=rate)
    # yuv420p (what players expect) needs even sizes: an odd width or height is encoded one
    # pixel smaller (FFmpeg rescales the frame to the stream's size).
    stream.width, stream.height = width - width % 2, height - height % 2
    stream.pix_fmt = "yuv420p"
    return stream
