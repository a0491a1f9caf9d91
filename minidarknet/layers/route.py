"""[route]: concatenate the outputs of earlier layers (both forks).

`layers=` lists the sources: a negative index is relative to this layer (-1 = the layer just
before), a non-negative one is absolute.  Darknet does no bounds check (a reference to the layer
itself, a later one or one before layer 0 crashes or reads garbage); here each is an error
naming the key.

Forward: per sample, the sources' FLAT outputs one after another in list order (a channel
concatenation when the spatial sizes agree).  Dims: those of the first source, plus the out_c
of every further source with the same out_w x out_h; one mismatch sets all three to 0 (Darknet
then keeps adding the out_c of later matching sources, leaving c non-zero with w = h = 0; the
flat concatenation works regardless).

AlexeyAB's `groups` / `group_id` take, from every source, only the group_id-th of `groups`
equal contiguous chunks of its flat output (a channel slice: CSP / YOLOv4-tiny), and divide
out_c and outputs by `groups`.

Backward adds each slice of the delta into its source's delta (sources whose delta is not
allocated, e.g. a [crop], are skipped).  The layer just before a route gets nothing from it
unless it is listed.
"""

from .base import Layer, _shape_str
from .registry import register


def resolve_reference(section, key, value, net):
    """The absolute index of an earlier layer named by `value` in `key` (Darknet: negative
    values count back from this layer).  Anything but an earlier layer is a CfgError."""
    me = net.building_index
    index = value + me if value < 0 else value
    where = f"{section.header} {key}={section.raw(key)}:"
    if index < 0:
        raise section.error(f"{where} {value} points before the first layer (this is layer "
                            f"{me}, so the oldest it can reach is {-me})", key)
    if index == me:
        raise section.error(f"{where} {value} refers to this layer ({me}) itself; only "
                            f"earlier layers can be used", key)
    if index > me:
        raise section.error(f"{where} layer {index} comes after this layer ({me}); only "
                            f"earlier layers can be used", key)
    return index


def read_references(section, key, net, required=True):
    """The list of layer indices in `key` (e.g. layers= or from=), resolved and checked."""
    values = section.ints(key)
    if values is None:
        if not required:
            return None
        raise section.error(f"{section.header} needs {key}= (the layers it reads from)", key)
    return [resolve_reference(section, key, v, net) for v in values]


def read_single_reference(section, key, net):
    """The one layer index in `key` (AlexeyAB's [sam] and [scale_channels] from=)."""
    sources = read_references(section, key, net)
    if len(sources) != 1:
        raise section.error(f"{section.header} {key}={section.raw(key)}: exactly one layer "
                            f"expected", key)
    return sources[0]


@register("route")
class Route(Layer):
    type = "route"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.sources = read_references(section, "layers", net)
        self.source_layers = [net.layers[i] for i in self.sources]
        self.groups = section.int("groups", 1)
        self.group_id = section.int("group_id", 0)
        # AlexeyAB's CUDA stream scheduling: no effect on the numbers.
        section.int("stream", -1)
        section.int("wait_stream", -1)
        if self.groups < 1:
            raise section.error(f"[route] groups={self.groups}: must be at least 1", "groups")
        if not 0 <= self.group_id < self.groups:
            raise section.error(f"[route] group_id={self.group_id}: must be in [0, "
                                f"{self.groups}) for groups={self.groups}", "group_id")
        for index, src in zip(self.sources, self.source_layers):
            image = src.out_c * src.out_h * src.out_w == src.outputs and src.outputs
            count, what = (src.out_c, "channels") if image else (src.outputs, "outputs")
            if count % self.groups:
                # A group must be whole channels, or the output is no c x h x w image.
                raise section.error(f"[route] groups={self.groups} does not divide the "
                                    f"{count} {what} of layer {index} ({src.type})", "groups")
        self.sizes = [src.outputs for src in self.source_layers]
        self.parts = [n // self.groups for n in self.sizes]
        self.set_output_shape(*self._route_dims(), sum(self.parts))
        self.allocate(shape.batch)

    def _route_dims(self):
        first = self.source_layers[0]
        c, h, w = first.out_c, first.out_h, first.out_w
        for src in self.source_layers[1:]:
            if src.out_w == first.out_w and src.out_h == first.out_h:
                c += src.out_c
            else:
                c = h = w = 0
        return c // self.groups, h, w

    def _slices(self):
        """(source layer, column range in this output, column range in the source output)."""
        start = 0
        for src, part in zip(self.source_layers, self.parts):
            yield src, slice(start, start + part), \
                slice(part * self.group_id, part * (self.group_id + 1))
            start += part

    def forward(self, net):
        out = self.output.reshape(self.batch, self.outputs)
        for src, mine, theirs in self._slices():
            out[:, mine] = src.output.reshape(self.batch, -1)[:, theirs]

    def backward(self, net):
        delta = self.delta.reshape(self.batch, self.outputs)
        for src, mine, theirs in self._slices():
            if src.delta is not None:
                src.delta.reshape(self.batch, -1)[:, theirs] += delta[:, mine]

    def describe(self):
        sources = " ".join(str(i) for i in self.sources)
        group = f"{self.group_id}/{self.groups}" if self.groups > 1 else ""
        return "", group, f"layers {sources}", \
            _shape_str(self.out_c, self.out_h, self.out_w, self.outputs)
