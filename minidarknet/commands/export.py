"""`minidarknet export CFG OUT.onnx`: the network as an ONNX model (minidarknet.export)."""
import time

import click

from ..errors import MiniDarknetError


def _outputs(text):
    if text is None or text == "all":
        return text
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected layer indices like 16,23 or 'all'",
                                 param_hint="--outputs") from None


@click.command(name="export")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("-w", "--weights", type=click.Path(dir_okay=False),
              help="Darknet .weights file (default: the random initial weights).")
@click.option("--fork", type=click.Choice(["pjreddie", "alexeyab"]), default=None,
              help="Whose numbers the graph computes (batch norm and the other fork "
                   "differences; default pjreddie).")
@click.option("--width", type=int, help="Override [net] width.")
@click.option("--height", type=int, help="Override [net] height.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Fixed batch size of the graph.")
@click.option("--dynamic-batch", is_flag=True, help="A symbolic batch dimension instead.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17).")
@click.option("--outputs", help="Layers whose outputs the graph returns: 16,23 or 'all' "
                                "(default: the detection heads and the output layer).")
@click.option("--decode", is_flag=True, help="Append the detector decoding: outputs boxes "
                                             "(batch, K, 4) and scores (batch, K, classes).")
@click.option("--image-size-input", is_flag=True,
              help="With --decode: an image_size input (batch, 2) = picture width, height; "
                   "boxes are then relative to the picture (letterbox correction).")
@click.option("--nms", type=float, default=None,
              help="With --decode: append ONNX NonMaxSuppression at this IoU (Darknet: .45).")
@click.option("--thresh", type=float, default=0.5, show_default=True,
              help="Score threshold of the NonMaxSuppression node.")
@click.option("--verify", is_flag=True, help="Run the file in onnxruntime and minidarknet on "
                                             "the same random input; exit 2 above 1e-4.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the random weights (without --weights) and the --verify input.")
def command(cfg, out, weights, fork, width, height, batch, dynamic_batch, opset, outputs,
            decode, image_size_input, nms, thresh, verify, seed):
    """Write the network of CFG as an ONNX model OUT (standard operators, minidarknet's
    numbers)."""
    import minidarknet
    try:
        from minidarknet import export
    except ImportError as e:
        raise MiniDarknetError(f"{e} (pip install 'minidarknet[onnx]')") from None
    if (image_size_input or nms is not None) and not decode:
        raise click.UsageError("--image-size-input and --nms need --decode")
    if dynamic_batch and batch != 1:
        raise click.UsageError("--batch and --dynamic-batch exclude each other")
    net = minidarknet.load(cfg, weights, batch=batch, width=width, height=height, seed=seed,
                           fork=fork)
    if weights is None:
        click.echo("no --weights: exporting the random initial weights", err=True)
    options = dict(batch=batch, dynamic_batch=dynamic_batch, outputs=_outputs(outputs),
                   decode=decode, image_size_input=image_size_input, nms=nms, thresh=thresh)
    if opset is not None:
        options["opset"] = opset
    start = time.perf_counter()
    model = export.export_onnx(net, out, **options)
    graph = model.graph
    click.echo(f"{out}: {len(graph.node)} nodes, opset {model.opset_import[0].version}, "
               f"inputs {', '.join(i.name for i in graph.input)}, outputs "
               f"{', '.join(o.name for o in graph.output)} "
               f"({time.perf_counter() - start:.1f} s)")
    if not verify:
        return
    results = export.verify(net, out, batch=batch, seed=seed)
    worst = max((diff for _, diff in results), default=0.0)
    for name, diff in results:
        click.echo(f"  {name}: largest relative difference {diff:.2e}")
    if not worst <= export.TOLERANCE:
        raise export.ExportError(f"{out}: onnxruntime and minidarknet differ by {worst:.2e} "
                                 f"(relative), more than {export.TOLERANCE:g}")
    click.echo(f"verified: every output within {export.TOLERANCE:g} of minidarknet's")
