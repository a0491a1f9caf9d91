"""[contrastive]: AlexeyAB's supervised-contrastive embedding loss (yolov4-tiny_contrastive).

Keys (AlexeyAB's parse_contrastive): classes (1000), temperature (1), yolo_layer (0: none;
negative counts back from this layer), cls_normalizer (1), max_delta, contrastive_neg_max (3).

Shape: outputs = inputs; AlexeyAB sets no output image dims (a following layer that needs an
image fails).  With yolo_layer pointing at a [yolo] layer the layer is in detection mode: the
embedding of each anchor is inputs/(anchors*h*w) values, which must equal the [yolo] layer's
embedding size (the filters of its `embedding_layer` divided by its anchors); AlexeyAB exits
when it does not, or when yolo_layer points at something else.

Forward: AlexeyAB's CPU forward returns at once when not training, so the output stays 0 (it
is never written); minidarknet does the same.  Training (the contrastive loss over every pair
of embeddings in the batch) is not implemented: a training forward raises a CfgError naming
the section.
"""
from .base import Layer
from .registry import register


@register("contrastive")
class Contrastive(Layer):
    type = "contrastive"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = section
        self.classes = s.int("classes", 1000)
        self.temperature = s.float("temperature", 1.0)
        s.float("cls_normalizer", 1.0)
        s.float("max_delta", 0.0)
        s.int("contrastive_neg_max", 3)
        self.yolo_layer = self._yolo_layer(s, net)
        self.n = 1
        self.embedding_size = shape.c
        if self.yolo_layer is not None:
            self._check_embedding(s, shape, net)
        self.set_output_shape(0, 0, 0, shape.inputs)
        self.allocate(shape.batch)

    def _yolo_layer(self, s, net):
        index = s.int("yolo_layer", 0)
        if index < 0:
            index += self.index
        if index == 0:
            return None
        if not 0 <= index < len(net.layers) or net.layers[index].type != "yolo":
            what = (f"layer {index} is a [{net.layers[index].type}]"
                    if 0 <= index < len(net.layers) else f"there is no layer {index} before it")
            raise s.error(f"[contrastive] yolo_layer={s.raw('yolo_layer')}: must point at an "
                          f"earlier [yolo] layer ({what})", "yolo_layer")
        return net.layers[index]

    def _check_embedding(self, s, shape, net):
        yolo = self.yolo_layer
        self.n = yolo.n
        self.classes = yolo.classes
        cells = yolo.n * shape.h * shape.w
        if not cells or shape.inputs % cells:
            raise s.error(f"[contrastive] the {shape.inputs} inputs are not a whole embedding "
                          f"per anchor ({yolo.n} anchors of [yolo] layer {yolo.index} x "
                          f"{shape.w} x {shape.h})", "yolo_layer")
        self.embedding_size = shape.inputs // cells
        expected = _yolo_embedding_size(yolo, net)
        if self.embedding_size != expected:
            raise s.error(f"[contrastive] embedding size {self.embedding_size} differs from the "
                          f"[yolo] layer {yolo.index}'s ({expected}, from its embedding_layer): "
                          f"both must use the same [convolutional] layer", "yolo_layer")

    def forward(self, net):
        if net.train:
            raise self.section.error("[contrastive]: training (AlexeyAB's contrastive loss) is "
                                     "not implemented in minidarknet; the layer runs "
                                     "inference only (its output stays 0, as in Darknet)")

    def describe(self):
        return "", "", f"{self.inputs}", f"{self.outputs}"


def _yolo_embedding_size(yolo, net):
    """AlexeyAB's embedding_size of a [yolo] layer: filters of its embedding_layer / anchors
    (0 without one)."""
    text = yolo.section.raw("embedding_layer")
    if text is None:
        return 0
    try:
        index = int(text)
    except ValueError:
        return 0
    if index < 0:
        index += yolo.index
    if not 0 <= index < len(net.layers):
        return 0
    return net.layers[index].out_c // yolo.n
