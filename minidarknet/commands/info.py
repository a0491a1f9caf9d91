"""`minidarknet info CFG`: the layer table Darknet prints at load time."""
import json

import click

from . import fork_option


@click.command(name="info")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.option("--width", type=int, help="Override [net] width (Darknet's resize_network).")
@click.option("--height", type=int, help="Override [net] height.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.option("-w", "--weights", type=click.Path(dir_okay=False),
              help="Load this .weights file (its header counts for the default fork).")
@fork_option
def command(cfg, width, height, as_json, weights, fork):
    """Print the layers of CFG: type, filters, size/stride, input -> output, BFLOPs."""
    import minidarknet
    from minidarknet.summary import format_runtime, format_table, layer_rows, runtime_info
    net = minidarknet.load(cfg, weights, width=width, height=height, batch=1, fork=fork)
    if as_json:
        click.echo(json.dumps({"cfg": cfg, "input": [net.c, net.h, net.w],
                               "fork": net.fork.name, "fork_reason": net.fork_reason,
                               "layers": layer_rows(net),
                               "parameters": net.parameter_count(),
                               "runtime": runtime_info()}, indent=1))
    else:
        click.echo(format_table(net))
        click.echo(f"fork: {net.fork.name} ({net.fork_reason})")
        click.echo(format_runtime(runtime_info()))
