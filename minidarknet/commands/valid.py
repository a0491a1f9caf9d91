"""`minidarknet valid CFG DATA --weights W`: top-1/top-5 accuracy or mAP@0.5.

Classifiers: Darknet's `classifier valid` (resize_min + centre crop, one pass).  Detectors:
AlexeyAB's `detector map` (validate_detector_map: thresh .005, NMS .45, IoU 0.5; --points 0
is its default area-under-curve AP, 11 for VOC2007, 101 for COCO-style); see
minidarknet/metrics.py for the exact method.
"""
import json

import click

from . import fork_option


@click.command(name="valid")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("data", type=click.Path())
@click.option("-w", "--weights", type=click.Path(dir_okay=False), required=True,
              help="Darknet .weights file.")
@click.option("--thresh", default=0.005, show_default=True,
              help="Detector: lowest probability kept (Darknet's map uses .005).")
@click.option("--iou-thresh", default=0.5, show_default=True, help="Detector: IoU for a hit.")
@click.option("--points", type=click.IntRange(min=0), default=0, show_default=True,
              help="Detector: 0 = area under the PR curve (AlexeyAB default), 11 = VOC2007, "
                   "101 = COCO recall points.")
@click.option("--nms", default=0.45, show_default=True, help="Detector: NMS IoU threshold.")
@click.option("--resize", type=click.Choice(["letterbox", "stretch"]), default="letterbox",
              show_default=True, help="Detector: how images are fitted to the net size.")
@click.option("--batch", type=click.IntRange(min=1), help="Images per forward pass "
              "(default: the cfg's mini-batch).")
@click.option("--on-bad-data", type=click.Choice(["skip", "fail"]), default="skip",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@fork_option
def command(cfg, data, weights, thresh, iou_thresh, points, nms, resize, batch, on_bad_data,
            as_json, fork):
    """Validate CFG with WEIGHTS on the validation part of DATA."""
    from minidarknet.valid import validate
    if points == 1:
        raise click.BadParameter("use 0 (area under the curve) or at least 2", param_hint="--points")
    report = validate(cfg, data, weights=weights, batch=batch, thresh=thresh, nms=nms,
                      iou_thresh=iou_thresh, points=points, resize=resize,
                      on_bad_data=on_bad_data, fork=fork)
    if as_json:
        click.echo(json.dumps(_as_dict(report), indent=1))
        return
    if report.kind == "classifier":
        parts = [f"{name.replace('top', 'top-')}: {value:.4f}" for name, value in
                 report.metrics.items()]
        click.echo(f"{report.images} images: " + ", ".join(parts))
        return
    d = report.detail
    names = report.names or []
    for class_id, ap in enumerate(d.ap):
        name = names[class_id] if class_id < len(names) else str(class_id)
        click.echo(f"class {class_id:>3} {name:<20} ap = {ap * 100:6.2f} %  (TP = "
                   f"{d.class_tp[class_id]}, FP = {d.class_fp[class_id]}, truths = "
                   f"{d.truth_counts[class_id]})")
    click.echo(f"for conf_thresh = {d.conf_thresh:.2f}: precision = {d.precision:.2f}, "
               f"recall = {d.recall:.2f}, F1-score = {d.f1:.2f}, TP = {d.tp}, FP = {d.fp}, "
               f"FN = {d.fn}, average IoU = {d.average_iou * 100:.2f} %")
    method = f"{d.points} recall points" if d.points else "area under the curve"
    click.echo(f"{report.images} images, {d.truths} boxes, {d.detections} detections; "
               f"mAP@{d.iou_thresh:g} ({method}) = {d.map:.4f}")


def _as_dict(report):
    out = {"kind": report.kind, "images": report.images, "metrics": report.metrics,
           "seconds": round(report.seconds, 3)}
    if report.detail is not None:
        d = report.detail
        out.update(ap=d.ap, names=report.names, truth_counts=d.truth_counts,
                   detections=d.detections, truths=d.truths, iou_thresh=d.iou_thresh,
                   points=d.points, conf_thresh=d.conf_thresh, precision=d.precision,
                   recall=d.recall, f1=d.f1, tp=d.tp, fp=d.fp, fn=d.fn,
                   average_iou=d.average_iou)
    return out
