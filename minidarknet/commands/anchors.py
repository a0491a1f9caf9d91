"""`minidarknet anchors DATA --cfg CFG`: anchors for a detector from its training labels.

AlexeyAB's `detector calc_anchors` (k-means with 1 - IoU on the label sizes scaled to the
network size, anchors sorted by area), seeded and best of --restarts runs, so the same data
and seed give the same anchors (minidarknet/anchors.py has the details).  Prints the
anchors, the average IoU of the boxes with their best anchor and which anchors each head
gets; --write NEW.cfg writes the cfg with anchors, mask, num and the filters before each
head updated (the original is never changed); --plot PNG draws the boxes and the anchors.
"""
import click


@click.command(name="anchors")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--cfg", "cfg", type=click.Path(dir_okay=False), required=True,
              help="The detector's cfg (its heads and, by default, its size and num).")
@click.option("--num", type=click.IntRange(min=1), help="Number of anchors (default: the "
              "cfg's num=).")
@click.option("--width", type=click.IntRange(min=1), help="Network width (default: the cfg's).")
@click.option("--height", type=click.IntRange(min=1), help="Network height (default: the "
              "cfg's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the k-means starts.")
@click.option("--restarts", type=click.IntRange(min=1), default=10, show_default=True,
              help="k-means runs from different starts; the best average IoU wins.")
@click.option("--write", "write", type=click.Path(dir_okay=False),
              help="Write a new cfg with the anchors, masks, num and filters set.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Save the boxes and anchors as "
              "a PNG.")
@click.option("--on-bad-data", type=click.Choice(["skip", "fail"]), default="skip",
              show_default=True)
def command(data, cfg, num, width, height, seed, restarts, write, plot, on_bad_data):
    """Compute anchors for CFG from the label boxes of DATA's train list."""
    import minidarknet
    from minidarknet.anchors import (detection_heads, format_anchors, kmeans_anchors,
                                     label_sizes, plan_heads, plot_anchors, region_grid,
                                     rewrite_cfg,
                                     write_cfg)

    net = minidarknet.load(cfg, batch=1)
    heads = detection_heads(net)
    width = width or net.w
    height = height or net.h
    grid = region_grid(net)
    if grid:               # YOLOv2: anchors in grid cells of a width x height input
        width, height = (round(width * grid[0] / net.w), round(height * grid[1] / net.h))
    num = num or int(heads[0].total if hasattr(heads[0], "total") else heads[0].n)
    sizes, images = label_sizes(data, width, height, on_bad_data=on_bad_data)
    fit = kmeans_anchors(sizes, num, seed=seed, restarts=restarts, width=width)
    units = f"grid {width}x{height} (cells)" if grid else f"network {width}x{height}"
    click.echo(f"{len(sizes)} boxes from {images} images, {units}; "
               f"k-means: {num} anchors, best of {restarts} runs (seed {seed}, run "
               f"{fit.restart + 1}, {fit.rounds} rounds)")
    click.echo(f"anchors = {format_anchors(fit.anchors, width)}")
    click.echo(f"avg IoU = {fit.avg_iou * 100:.2f} %")
    plans = plan_heads(net, fit.anchors)
    counts = [int((fit.assignment == i).sum()) for i in range(num)]
    for plan in plans:
        layer = plan.layer
        picked = fit.anchors[plan.mask]
        click.echo(f"layer {layer.index:>3} [{layer.type}] {layer.out_w}x{layer.out_h} (stride "
                   f"{plan.stride:g}): " + ("all anchors" if layer.type == "region" else
                                            f"mask={','.join(map(str, plan.mask))}") +
                   f"  anchors "
                   f"{format_anchors(picked, width)}  ({sum(counts[i] for i in plan.mask)} "
                   f"boxes); filters={plan.filters} in layer {plan.conv.index}")
    if plot:
        plot_anchors(plot, sizes, fit, width, height)
        click.echo(f"picture: {plot}")
    if write:
        with open(cfg, encoding="utf-8") as f:
            text = f.read()
        new_text = rewrite_cfg(text, plans)
        minidarknet.loads(new_text, path=write, batch=1)    # it must build before it is written
        write_cfg(cfg, write, new_text)
        click.echo(f"written: {write}")
