"""`minidarknet partial CFG WEIGHTS OUT N`: Darknet's partial (minidarknet/partial.py): the
first N layers' weights with `seen` reset to 0, e.g. a pretrained backbone to train from."""
import click


@click.command(name="partial")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.argument("count", metavar="N", type=click.IntRange(min=0))
def command(cfg, weights, out, count):
    """Save the first N layers of WEIGHTS (for CFG) to OUT, with seen = 0."""
    from minidarknet.partial import partial
    net, size = partial(cfg, weights, out, count)
    kept = net.layers[:count]
    floats = sum(l.weight_count() for l in kept if not l.dontsave)
    click.echo(f"{out}: layers 0..{count - 1} of {len(net.layers)} ({floats} floats, {size} "
               f"bytes), seen = 0")
