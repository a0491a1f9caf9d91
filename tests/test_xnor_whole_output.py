"""An XNOR convolution activates its whole output at once, while the leaky activation's
scratch buffer is sized for one column chunk: an output larger than a chunk (any real network:
the corpus's darknet53_448_xnor, tiny-yolo_xnor and yolov3-tiny_xnor at their own size) must
still come out as leaky(linear output)."""
import warnings

import numpy as np
import pytest

import minidarknet
from minidarknet.errors import DarknetWarning


def xnor_net(activation, path):
    text = (f"[net]\nbatch=1\nwidth=256\nheight=256\nchannels=3\n\n[convolutional]\nxnor=1\n"
            f"batch_normalize=1\nfilters=32\nsize=3\npad=1\nactivation={activation}\n"
            f"xnor_path={path}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DarknetWarning)
        return minidarknet.loads(text, seed=3)


@pytest.mark.parametrize("path", ["float", "bits"])
def test_leaky_xnor_output_larger_than_the_activation_scratch(path):
    leaky_net, linear_net = xnor_net("leaky", path), xnor_net("linear", path)
    layer = leaky_net.layers[0]
    assert layer._act_scratch.size < layer.outputs       # the case being tested
    x = np.random.default_rng(0).normal(size=(1, 3, 256, 256)).astype(np.float32)
    out = leaky_net.forward(x).copy()
    linear = linear_net.forward(x)
    expected = np.maximum(linear, linear * np.float32(0.1))
    np.testing.assert_array_equal(out, expected)
    assert (linear < 0).any() and (linear > 0).any()
