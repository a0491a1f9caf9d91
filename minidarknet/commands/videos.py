"""Video files given to `minidarknet run` (minidarknet/video.py does the work): every video
goes to DIR/<name>.mp4 with the boxes drawn, and every frame to one line of
DIR/results.jsonl (written to a temporary file and renamed when all videos are done)."""
import os

import click


def run_videos(cfg, weights, videos, out, batch, resize, thresh, hier, nms, names):
    import minidarknet
    from minidarknet.atomic import open_atomic
    from minidarknet.commands.run import DETECTION_TYPES, read_names
    from minidarknet.video import _av, run_video

    if not out or (os.path.exists(out) or os.path.splitext(out)[1]) and \
            not os.path.isdir(out):
        raise click.BadParameter("video files need --out DIR (the folder for the drawn "
                                 "videos and results.jsonl)", param_hint="--out")
    _av()                                    # the missing extra is reported before anything
    net = minidarknet.load(cfg, weights, batch=batch or 8)
    if not any(layer.type in DETECTION_TYPES for layer in net.layers):
        raise click.UsageError(f"{cfg}: video files are run through a detector; this "
                               f"network has no [yolo], [region] or [detection] layer")
    class_names = read_names(names) if names else None
    os.makedirs(out, exist_ok=True)
    results = os.path.join(out, "results.jsonl")
    with open_atomic(results, "w", encoding="utf-8") as jsonl:
        for video in videos:
            frames, seconds, drawn = run_video(
                net, video, out, jsonl=jsonl, thresh=thresh, hier=hier, nms=nms,
                names=class_names, mode=resize or "letterbox")
            click.echo(f"{video}: {frames} frames in {seconds:.1f} s "
                       f"({frames / max(seconds, 1e-9):.1f} frames/s) -> {drawn}", err=True)
    click.echo(f"{len(videos)} video(s) -> {results}", err=True)
