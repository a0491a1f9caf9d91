"""AlexeyAB's `share_index` in [convolutional]: a layer that uses another layer's parameters.

share_index=i names the layer whose weights, biases and batch-norm arrays (scales, rolling
mean and variance, and their update buffers) this layer uses: an absolute index when i >= 0,
relative to this layer when negative (AlexeyAB's parse_convolutional).  TridentNet
(resnet152_trident.cfg) runs the same filters with different dilations this way.

AlexeyAB checks that size, weight count, input channels and filters match and otherwise only
prints a message and waits for a key; here a mismatch, a layer that is not an earlier
[convolutional], or a batch_normalize that differs (AlexeyAB would share arrays the other
layer does not have) is a CfgError naming the key.  The sharing layer has no parameters of its
own in the weights file (AlexeyAB reads and writes nothing for it); its gradients accumulate
into the shared update buffers, and only the owning layer applies the update (otherwise the
shared weights would move twice per step).
"""

SHARED_ARRAYS = ("weights", "weight_updates", "biases", "bias_updates", "scales",
                 "scale_updates", "rolling_mean", "rolling_variance", "mean", "variance")


def shared_layer(layer, section, net):
    """The [convolutional] layer whose parameters `layer` uses, or None without share_index."""
    if not section.has("share_index"):
        return None
    index = section.int("share_index")
    if index < 0:
        index += layer.index
    shown = f"[convolutional] share_index={section.raw('share_index')}"
    if not 0 <= index < layer.index:
        raise section.error(f"{shown}: must name an earlier layer (this is layer "
                            f"{layer.index})", "share_index")
    other = net.layers[index]
    if other.type != "convolutional":
        raise section.error(f"{shown}: layer {index} is a [{other.type}], not a "
                            f"[convolutional]", "share_index")
    mine = (layer.size, layer.weights.shape, layer.in_c, layer.filters, layer.batch_normalize)
    theirs = (other.size, other.weights.shape, other.in_c, other.filters,
              other.batch_normalize)
    if mine != theirs:
        raise section.error(
            f"{shown}: layer {index} has size={other.size}, filters={other.filters}, "
            f"{other.in_c} input channels, batch_normalize={other.batch_normalize}; this layer "
            f"has size={layer.size}, filters={layer.filters}, {layer.in_c} input channels, "
            f"batch_normalize={layer.batch_normalize} (they must match)", "share_index")
    return other


def share_parameters(layer, other):
    """Point layer's parameter arrays at other's (the same numpy arrays)."""
    for name in SHARED_ARRAYS:
        if hasattr(other, name):
            setattr(layer, name, getattr(other, name))
