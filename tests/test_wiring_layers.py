"""Wiring and small layers: route, shortcut, upsample, reorg/reorg3d, crop, lrn, scale_channels,
sam, empty/silence, implicit.

* hand-computed values and the numbers verified against Darknet in spec section 10 (reorg ramp,
  shortcut 1002 2004 3 4, LRN norms 3 4 5 5 5 5 5 4 3) and golden README quirks 7, 12-14;
* Darknet-mode quirks (overwriting backwards, AB's weighted-shortcut update);
* finite-difference checks of gradients="exact" for every layer with a backward (float64 buffers,
  so central differences are accurate to ~1e-9);
* clear errors for bad references and shapes;
* the golden cases that exercise these layers (they also need [convolutional] and [maxpool]).
"""
import warnings

import numpy as np
import pytest

import minidarknet
from minidarknet.errors import CfgError, DarknetWarning
from minidarknet.layers.normalization import darknet_lrn_windows

from conftest import GOLDEN, need_shared, numeric_gradient


def build(body, batch=2, c=4, h=4, w=4, gradients="darknet", seed=0, **net_keys):
    extra = "".join(f"{k}={v}\n" for k, v in net_keys.items())
    text = f"[net]\nbatch={batch}\nwidth={w}\nheight={h}\nchannels={c}\n{extra}\n{body}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DarknetWarning)
        return minidarknet.loads(text, gradients=gradients, seed=seed)


def ramp(*shape):
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


# ====================================================================== reorg
def test_reorg_pjreddie_ramp_first_channel_is_0_2_4_6():
    net = build("[reorg]\nstride=2\n", batch=1)
    out = net.forward(ramp(1, 4, 4, 4))
    assert out.shape == (1, 16, 2, 2)
    assert out[0, 0].ravel().tolist() == [0, 2, 4, 6]


def test_reorg3d_ramp_first_channel_is_0_2_8_10():
    net = build("[reorg3d]\nstride=2\n", batch=1)
    out = net.forward(ramp(1, 4, 4, 4))
    assert out.shape == (1, 16, 2, 2)
    assert out[0, 0].ravel().tolist() == [0, 2, 8, 10]


def test_reorg_matches_golden_quirk_7_formula():
    rng = np.random.default_rng(1)
    x = rng.random((2, 8, 6, 4), dtype=np.float32)
    net = build("[reorg]\nstride=2\n", c=8, h=6, w=4)
    s = 2
    expected = x.reshape(2, 8 // 4, 6, s, 4, s).transpose(0, 3, 5, 1, 2, 4).reshape(2, 32, 3, 2)
    np.testing.assert_array_equal(net.forward(x), expected)


def test_reorg3d_is_a_true_space_to_depth():
    rng = np.random.default_rng(2)
    x = rng.random((2, 3, 6, 9), dtype=np.float32)
    out = build("[reorg3d]\nstride=3\n", c=3, h=6, w=9).forward(x)
    assert out.shape == (2, 27, 2, 3)
    for dy in range(3):
        for dx in range(3):
            for c in range(3):
                np.testing.assert_array_equal(out[:, (dy * 3 + dx) * 3 + c],
                                              x[:, c, dy::3, dx::3])


def test_reorg_reverse_undoes_reorg3d():
    # pjreddie's reverse reorg (mode A with the input dims) is a true depth-to-space.
    rng = np.random.default_rng(3)
    x = rng.random((2, 4, 4, 6), dtype=np.float32)
    net = build("[reorg3d]\nstride=2\n[reorg]\nstride=2\nreverse=1\n", c=4, h=4, w=6)
    np.testing.assert_array_equal(net.forward(x), x)
    assert (net.layers[1].out_c, net.layers[1].out_h, net.layers[1].out_w) == (4, 4, 6)


def test_reorg_flatten_and_reverse_flatten():
    x = ramp(2, 3, 2, 2)
    net = build("[reorg]\nflatten=1\n[reorg]\nflatten=1\nreverse=1\n", c=3, h=2, w=2)
    net.forward(x)
    flat = net.layers[0].output.reshape(2, -1)
    np.testing.assert_array_equal(flat, x.reshape(2, 3, 4).transpose(0, 2, 1).reshape(2, -1))
    np.testing.assert_array_equal(net.layers[1].output, x)


def test_reorg_extra_copies_and_leaves_a_zero_tail():
    net = build("[reorg]\nstride=2\nextra=5\n", c=2, h=2, w=2)
    layer = net.layers[0]
    assert (layer.out_c, layer.out_h, layer.out_w, layer.outputs) == (0, 0, 0, 13)
    out = net.forward(ramp(2, 2, 2, 2) + 1).reshape(2, -1)
    np.testing.assert_array_equal(out[:, :8], (ramp(2, 8) + 1))
    assert not out[:, 8:].any()


def test_reorg_darknet_backward_assigns_the_inverse_permutation():
    net = build("[activation]\n[reorg]\nstride=2\n", c=4, h=2, w=2)
    net.forward(np.ones((2, 4, 2, 2)), train=True)
    net.layers[0].delta[...] = 100          # e.g. what a route added: Darknet overwrites it
    net.layers[1].delta[...] = ramp(2, 16, 1, 1)
    net.layers[1].backward(_BackwardNet(net, 1))
    again = build("[reorg]\nstride=2\n", c=4, h=2, w=2).forward(net.layers[0].delta)
    np.testing.assert_array_equal(again.reshape(2, -1), ramp(2, 16))


class _BackwardNet:
    """What network.backward hands layer `i`: the previous layer's output and delta."""

    def __init__(self, net, i):
        self.input = net.layers[i - 1].output if i else net.x
        self.delta = net.layers[i - 1].delta if i else net.input_delta


# ====================================================================== shortcut
SPEC_SHORTCUT = """
[implicit]
filters=2
std=0
[implicit]
filters=4
std=0
[shortcut]
from=-2
alpha=2
beta=10
"""


def test_shortcut_spec_example_channels_beyond_overlap_keep_prev_without_alpha():
    net = build(SPEC_SHORTCUT, batch=1, c=1, h=1, w=1)
    net.layers[0].weights[:, 0, 0] = [100, 200]
    net.layers[1].weights[:, 0, 0] = [1, 2, 3, 4]
    assert net.forward(np.zeros((1, 1, 1, 1))).ravel().tolist() == [1002, 2004, 3, 4]


def test_shortcut_pjreddie_backward_alpha_everywhere_beta_on_overlap():
    net = build(SPEC_SHORTCUT + "activation=linear\n", batch=1, c=1, h=1, w=1)
    net.forward(np.zeros((1, 1, 1, 1)), train=True)
    short = net.layers[2]
    short.delta[...] = np.array([1, 2, 3, 4], np.float32).reshape(short.delta.shape)
    net.layers[1].delta[...] = 0
    net.layers[0].delta[...] = 0
    short.backward(_BackwardNet(net, 2))
    assert net.layers[1].delta.ravel().tolist() == [2, 4, 6, 8]       # alpha * delta
    assert net.layers[0].delta.ravel().tolist() == [10, 20]           # beta * first channels


def test_shortcut_from_larger_is_subsampled_and_from_smaller_lands_on_every_sth_pixel():
    x = ramp(1, 2, 4, 4)
    # from layer 0 (4x4) into 2x2 (downsample sums 2x2 blocks): every 2nd pixel of from is added
    net = build("[activation]\n[upsample]\nstride=-2\n[shortcut]\nfrom=0\n", batch=1,
                c=2, h=4, w=4)
    out = net.forward(x)
    down = x.reshape(1, 2, 2, 2, 2, 2).sum(axis=(3, 5))
    np.testing.assert_array_equal(out, down + x[:, :, ::2, ::2])
    # from layer 0 (2x2) into 4x4: added at every 2nd output pixel only
    net = build("[activation]\n[upsample]\nstride=2\n[shortcut]\nfrom=0\n", batch=1,
                c=2, h=2, w=2)
    y = ramp(1, 2, 2, 2)
    out = net.forward(y)
    expected = np.repeat(np.repeat(y, 2, axis=2), 2, axis=3)
    expected[:, :, ::2, ::2] += y
    np.testing.assert_array_equal(out, expected)


def test_shortcut_activation_is_applied_after_the_add():
    net = build("[activation]\n[activation]\n[shortcut]\nfrom=0\nactivation=leaky\n", c=1,
                h=1, w=3, batch=1)
    out = net.forward(np.array([-1, 2, -3], np.float32).reshape(1, 1, 1, 3))
    np.testing.assert_allclose(out.ravel(), [-0.2, 4, -0.6], rtol=1e-6)


AB_WEIGHTED = """
[activation]
[activation]
activation=relu
[activation]
activation=logistic
[shortcut]
from=0,1
weights_type={wt}
weights_normalization={wn}
"""


def ab_effective(w, norm):
    if norm == "relu":
        r = np.maximum(w, 0)
        return r / (1e-4 + r.sum(axis=0))
    if norm == "softmax":
        e = np.exp(w - w.max(axis=0))
        return e / (1e-4 + e.sum(axis=0))
    return w


@pytest.mark.parametrize("wt", ["per_feature", "per_channel"])
@pytest.mark.parametrize("wn", ["none", "relu", "softmax"])
def test_shortcut_alexeyab_weighted_forward(wt, wn):
    net = build(AB_WEIGHTED.format(wt=wt, wn=wn), c=3, h=2, w=2)
    layer = net.layers[3]
    assert layer.weights.shape == ((3, 1) if wt == "per_feature" else (3, 3))
    assert (layer.weights == 1).all()                  # AB's initial value
    rng = np.random.default_rng(4)
    layer.weights[...] = rng.normal(0, 1, layer.weights.shape)
    x = rng.normal(0, 1, (2, 3, 2, 2)).astype(np.float32)
    out = net.forward(x)
    a = ab_effective(layer.weights.astype(np.float64), wn)[:, :, None, None]
    prev = 1 / (1 + np.exp(-np.maximum(x, 0)))         # layer 2: logistic(relu(x))
    expected = a[0] * prev + a[1] * x + a[2] * np.maximum(x, 0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_shortcut_alexeyab_smaller_input_is_added_to_the_first_flat_elements():
    # from = layer 0 (2 channels of 2x2 after a groups=2 route); prev has 4 channels.
    net = build("[activation]\n[route]\nlayers=0\ngroups=2\n[route]\nlayers=0\n"
                "[shortcut]\nfrom=1,0\n", c=4, h=2, w=2, batch=1)
    x = ramp(1, 4, 2, 2)
    out = net.forward(x).reshape(-1)
    expected = 2 * x.reshape(-1)
    expected[:8] += x.reshape(-1)[:8]
    np.testing.assert_array_equal(out, expected)


def test_shortcut_alexeyab_darknet_weight_update_is_ab_formula():
    # With a normalisation, AB's update is delta*input_k*G, G = delta*prev*sum_j a_j.
    net = build(AB_WEIGHTED.format(wt="per_feature", wn="relu"), c=1, h=1, w=3, batch=1)
    layer = net.layers[3]
    layer.weights[:, 0] = [0.5, 2.0, -1.0]
    x = np.array([1.0, -2.0, 3.0], np.float32).reshape(1, 1, 1, 3)
    net.forward(x, train=True)
    layer.delta[...] = np.array([0.5, -1.0, 2.0], np.float32).reshape(layer.delta.shape)
    delta = layer.delta.ravel().copy()
    layer.backward(_BackwardNet(net, 3))
    a = ab_effective(layer.weights.astype(np.float64), "relu")[:, 0]
    prev = 1 / (1 + np.exp(-np.maximum(x.ravel(), 0)))
    inputs = [prev, x.ravel(), np.maximum(x.ravel(), 0)]
    g = delta * prev * a.sum()
    expected = [np.sum(delta * inp * g) for inp in inputs]
    np.testing.assert_allclose(layer.weight_updates[:, 0], expected, rtol=1e-5)


def test_shortcut_weights_are_saved_loaded_and_updated_like_conv(tmp_path):
    net = build(AB_WEIGHTED.format(wt="per_channel", wn="none"), c=3, h=2, w=2,
                learning_rate=0.5, momentum=0.9, decay=0.01)
    layer = net.layers[3]
    assert net.parameter_count() == 9
    layer.weights[...] = np.arange(9, dtype=np.float32).reshape(3, 3)
    path = tmp_path / "s.weights"
    net.save_weights(path)
    assert path.stat().st_size == 20 + 9 * 4
    other = build(AB_WEIGHTED.format(wt="per_channel", wn="none"), c=3, h=2, w=2)
    other.load_weights(path)
    np.testing.assert_array_equal(other.layers[3].weights, layer.weights)
    # one update with B = batch = 2: updates -= decay*B*w; w += lr/B*updates; updates *= mom
    layer.weight_updates[...] = 1.0
    w0 = layer.weights.copy()
    net.update()
    upd = 1.0 - 0.01 * 2 * w0
    np.testing.assert_allclose(layer.weights, w0 + 0.5 / 2 * upd, rtol=1e-6)
    np.testing.assert_allclose(layer.weight_updates, 0.9 * upd, rtol=1e-6)


# ====================================================================== route
def test_route_concatenates_flat_outputs_in_list_order():
    net = build("[activation]\n[activation]\nactivation=relu\n[route]\nlayers=-1,0\n",
                c=2, h=1, w=2)
    x = np.array([[-1, 2, 3, -4], [5, -6, 7, 8]], np.float32).reshape(2, 2, 1, 2)
    out = net.forward(x)
    assert out.shape == (2, 4, 1, 2)
    np.testing.assert_array_equal(out.reshape(2, -1),
                                  np.concatenate([np.maximum(x, 0), x], axis=1).reshape(2, -1))
    route = net.layers[2]
    assert route.sources == [1, 0]
    assert route.describe()[2] == "layers 1 0"


def test_route_mismatched_sizes_zero_the_dims_but_concatenate():
    net = build("[activation]\n[upsample]\nstride=2\n[route]\nlayers=0,1\n", c=1, h=1, w=2,
                batch=1)
    route = net.layers[2]
    assert (route.out_c, route.out_h, route.out_w, route.outputs) == (0, 0, 0, 10)
    out = net.forward(np.array([[[[1, 2]]]], np.float32))
    assert out.ravel().tolist() == [1, 2, 1, 1, 2, 2, 1, 1, 2, 2]


def test_route_groups_take_the_group_id_th_chunk_of_each_source():
    net = build("[activation]\n[route]\nlayers=0\ngroups=2\ngroup_id=1\n", c=4, h=1, w=1,
                batch=1)
    route = net.layers[1]
    assert (route.out_c, route.outputs) == (2, 2)
    assert net.forward(np.array([1, 2, 3, 4], np.float32).reshape(1, 4, 1, 1)).ravel().tolist() \
        == [3, 4]


def test_route_backward_adds_into_the_sources_and_skips_the_previous_layer():
    net = build("[activation]\n[activation]\n[route]\nlayers=0\n", c=1, h=1, w=2, batch=1)
    net.forward(np.ones((1, 1, 1, 2)), train=True)
    net.layers[0].delta[...] = 1
    net.layers[2].delta[...] = 5
    net.layers[2].backward(_BackwardNet(net, 2))
    assert net.layers[0].delta.ravel().tolist() == [6, 6]
    assert not net.layers[1].delta.any()


# ====================================================================== upsample
def test_upsample_nearest_times_scale_and_backward_sums_blocks():
    net = build("[upsample]\nstride=2\nscale=0.5\n", c=1, h=1, w=2, batch=1)
    out = net.forward(np.array([[[[2, 4]]]], np.float32))
    assert out.shape == (1, 1, 2, 4)
    assert out.ravel().tolist() == [1, 1, 2, 2, 1, 1, 2, 2]
    layer = net.layers[0]
    layer.delta = ramp(1, 1, 2, 4)
    net.input_delta = np.ones((1, 1, 1, 2), np.float32)
    net.x = np.zeros((1, 1, 1, 2), np.float32)
    layer.backward(_BackwardNet(net, 0))
    # 1 + 0.5*(0+1+4+5), 1 + 0.5*(2+3+6+7)
    assert net.input_delta.ravel().tolist() == [6, 10]


def test_downsample_sums_blocks_and_darknet_backward_overwrites():
    net = build("[upsample]\nstride=-2\nscale=2\n", c=1, h=2, w=4, batch=1)
    out = net.forward(ramp(1, 1, 2, 4))
    assert out.ravel().tolist() == [2 * (0 + 1 + 4 + 5), 2 * (2 + 3 + 6 + 7)]
    layer = net.layers[0]
    layer.delta = np.array([1, 3], np.float32).reshape(1, 1, 1, 2)
    net.input_delta = np.full((1, 1, 2, 4), 100, np.float32)
    net.x = np.zeros((1, 1, 2, 4), np.float32)
    layer.backward(_BackwardNet(net, 0))
    assert net.input_delta.ravel().tolist() == [2, 2, 6, 6, 2, 2, 6, 6]


# ====================================================================== crop
def test_crop_inference_takes_the_centre_and_maps_to_minus_one_one():
    net = build("[crop]\ncrop_height=2\ncrop_width=3\n", c=1, h=5, w=5, batch=1)
    x = ramp(1, 1, 5, 5) / 24
    out = net.forward(x)
    np.testing.assert_allclose(out, x[:, :, 1:3, 1:4] * 2 - 1, rtol=1e-6)
    net = build("[crop]\ncrop_height=2\ncrop_width=3\nnoadjust=1\n", c=1, h=5, w=5, batch=1)
    np.testing.assert_array_equal(net.forward(x), x[:, :, 1:3, 1:4])


def test_crop_training_uses_one_random_window_and_flip_per_batch():
    net = build("[crop]\ncrop_height=2\ncrop_width=2\nflip=1\nnoadjust=1\n", c=2, h=4, w=5,
                seed=3)
    x = ramp(2, 2, 4, 5)
    seen_flip = seen_plain = False
    for _ in range(30):
        out = net.forward(x, train=True)
        dh, dw, flip = net.layers[0].offset
        cols = [5 - dw - j - 1 for j in range(2)] if flip else [dw + j for j in range(2)]
        np.testing.assert_array_equal(out, x[:, :, dh:dh + 2][:, :, :, cols])
        seen_flip |= flip
        seen_plain |= not flip
    assert seen_flip and seen_plain


def test_crop_has_no_delta_in_darknet_mode():
    net = build("[crop]\ncrop_height=2\ncrop_width=2\n[activation]\n[cost]\n", c=1, h=3, w=3)
    net.forward(np.ones((2, 1, 3, 3)), np.zeros((2, 4)), train=True)
    net.backward()
    assert net.layers[0].delta is None
    assert not net.input_delta.any()


def test_crop_gpu_only_keys_warn():
    text = "[net]\nbatch=1\nwidth=3\nheight=3\nchannels=1\n[crop]\ncrop_height=2\n" \
           "crop_width=2\nangle=7\n"
    with pytest.warns(DarknetWarning, match="angle=7 acts only on Darknet's GPU"):
        minidarknet.loads(text)


# ====================================================================== lrn
def test_lrn_off_by_one_window_spec_example():
    net = build("[lrn]\nsize=5\nalpha=1\nbeta=1\nkappa=1\n", c=9, h=1, w=2, batch=1)
    out = net.forward(np.ones((1, 9, 1, 2), np.float32))
    norms = net.layers[0].norms[0, :, 0, 0]
    assert norms.tolist() == [3, 4, 5, 5, 5, 5, 5, 4, 3]
    np.testing.assert_allclose(out[0, :, 0, 0], 1 / norms, rtol=1e-6)


def test_lrn_window_matrix_subtracts_the_never_added_channel():
    a = darknet_lrn_windows(8, 5)
    assert a[0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert a[3].tolist() == [0, 1, 0, 1, 1, 1, 0, 0]
    assert a[5].tolist() == [0, 0, -1, 1, 1, 1, 1, 1]


def test_lrn_matches_window_matrix_on_random_input():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 2, (2, 7, 3, 2)).astype(np.float32)
    net = build("[normalization]\nsize=3\nalpha=0.01\nbeta=0.75\nkappa=2\n", c=7, h=3, w=2)
    out = net.forward(x)
    norms = 2 + 0.01 * np.einsum("kj,bjhw->bkhw", darknet_lrn_windows(7, 3), x.astype(float) ** 2)
    np.testing.assert_allclose(net.layers[0].norms, norms, rtol=1e-5)
    np.testing.assert_allclose(out, x * norms ** -0.75, rtol=1e-5)


def test_lrn_darknet_backward_overwrites_with_delta_times_norm_power():
    net = build("[activation]\n[lrn]\nsize=3\nalpha=0.5\nbeta=2\nkappa=1\n", c=3, h=1, w=1,
                batch=1)
    net.forward(np.array([1, 2, 3], np.float32).reshape(1, 3, 1, 1), train=True)
    lrn = net.layers[1]
    net.layers[0].delta[...] = 100
    lrn.delta[...] = 1
    lrn.backward(_BackwardNet(net, 1))
    np.testing.assert_allclose(net.layers[0].delta, lrn.norms ** -2.0, rtol=1e-6)


# ====================================================================== AB small layers
def test_scale_channels_squeeze_excitation_and_scale_wh():
    text = "[activation]\n[avgpool]\n[scale_channels]\nfrom=0\n"
    net = build(text, c=2, h=2, w=2, batch=1)
    x = ramp(1, 2, 2, 2)
    out = net.forward(x)
    np.testing.assert_allclose(out, x * x.mean(axis=(2, 3), keepdims=True), rtol=1e-6)
    text = "[activation]\n[route]\nlayers=0\ngroups=2\n[scale_channels]\nfrom=0\nscale_wh=1\n"
    net = build(text, c=2, h=2, w=2, batch=1)
    out = net.forward(x)
    np.testing.assert_allclose(out, x * x[:, :1], rtol=1e-6)


def test_sam_multiplies_and_darknet_overwrites_the_from_delta():
    net = build("[activation]\n[activation]\nactivation=relu\n[sam]\nfrom=0\n", c=1, h=1, w=2,
                batch=1)
    x = np.array([[[[-2, 3]]]], np.float32)
    assert net.forward(x, train=True).ravel().tolist() == [0, 9]
    net.layers[0].delta[...] = 100
    net.layers[2].delta[...] = 1
    net.layers[2].backward(_BackwardNet(net, 2))
    assert net.layers[0].delta.ravel().tolist() == [0, 3]      # prev * delta, assigned
    assert net.layers[1].delta.ravel().tolist() == [-2, 3]     # from * delta, added


def test_empty_and_silence_alias_the_previous_buffers():
    net = build("[activation]\n[empty]\n[silence]\n", c=1, h=1, w=3)
    net.forward(np.ones((2, 1, 1, 3)), train=True)
    assert net.layers[1].output is net.layers[0].output
    assert net.layers[2].delta is net.layers[0].delta
    net.set_batch(3)
    assert net.layers[2].output is net.layers[0].output


def test_implicit_outputs_its_weights_for_every_sample(tmp_path):
    net = build("[implicit]\nfilters=3\natoms=2\nmean=1\nstd=0.5\n", c=1, h=1, w=1)
    layer = net.layers[0]
    assert layer.weights.shape == (3, 2, 1)
    assert ((layer.weights >= 0.5) & (layer.weights <= 1.5)).all()
    out = net.forward(np.zeros((2, 1, 1, 1)))
    assert out.shape == (2, 3, 2, 1)
    np.testing.assert_array_equal(out[0], layer.weights)
    np.testing.assert_array_equal(out[1], layer.weights)
    path = tmp_path / "i.weights"
    net.save_weights(path)
    other = build("[implicit]\nfilters=3\natoms=2\n", c=1, h=1, w=1, seed=9)
    other.load_weights(path)
    np.testing.assert_array_equal(other.layers[0].weights, layer.weights)


# ====================================================================== errors
@pytest.mark.parametrize("body, key, words", [
    ("[activation]\n[route]\nlayers=-3\n", "layers", "before the first layer"),
    ("[activation]\n[route]\nlayers=1\n", "layers", "itself"),
    ("[activation]\n[route]\nlayers=0,5\n", "layers", "comes after"),
    ("[activation]\n[route]\n", "layers", "needs layers="),
    ("[activation]\n[route]\nlayers=0\ngroups=3\n", "groups", "does not divide"),
    # the flat size divides, the channels do not: no c x h x w output (was a reshape error later)
    ("[convolutional]\nfilters=3\nsize=1\n[route]\nlayers=0\ngroups=2\n", "groups",
     "does not divide the 3 channels"),
    ("[activation]\n[route]\nlayers=0\ngroups=2\ngroup_id=2\n", "group_id", "must be in"),
    ("[activation]\n[shortcut]\nfrom=0\nweights_type=bogus\n", "weights_type", "expected"),
    ("[activation]\n[shortcut]\nfrom=-2\n", "from", "before the first layer"),
    ("[activation]\n[shortcut]\n", "from", "needs from="),
    ("[activation]\n[activation]\n[shortcut]\nfrom=0,1\nalpha=2\n", "alpha", "pjreddie"),
    ("[activation]\n[upsample]\n[route]\nlayers=0,1\n[route]\nlayers=0\n[shortcut]\nfrom=2\n",
     "from", "no c x h x w"),
    ("[reorg]\nstride=3\n", "stride", "multiple of 3"),
    ("[reorg]\nstride=0\n", "stride", "at least 1"),
    ("[reorg]\nstride=2\nextra=3\nreverse=1\n", "extra", "cannot be combined"),
    ("[upsample]\nstride=0\n", "stride", "non-zero"),
    ("[upsample]\nstride=-3\n", "stride", "multiple of 3"),
    ("[crop]\ncrop_height=9\n", "crop_height", "between 1 and"),
    ("[lrn]\nsize=11\n", "size", "half the window"),
    ("[activation]\n[scale_channels]\nfrom=0\n", None, "must output 1 x 1 x 4"),
    ("[activation]\n[reorg3d]\nstride=2\n[sam]\nfrom=0\n", "from", "must be equal"),
    ("[implicit]\nfilters=0\n", "filters", "at least 1"),
])
def test_bad_sections_are_clear_errors(body, key, words):
    with pytest.raises(CfgError, match=words) as info:
        build(body)
    if key is not None:
        text = f"[net]\nbatch=2\nwidth=4\nheight=4\nchannels=4\n\n{body}"
        lines = list(enumerate(text.split("\n"), 1))
        keyed = [i for i, l in lines if l.startswith(key + "=")]
        # a missing key is reported at its section's header (the last one here)
        line = keyed[0] if keyed else [i for i, l in lines if l.startswith("[")][-1]
        assert f"<cfg>:{line}:" in str(info.value)


def test_shortcut_sizes_must_differ_by_the_same_factor():
    with pytest.raises(CfgError, match="same factor in w and h"):
        build("[activation]\n[crop]\ncrop_height=2\ncrop_width=2\n[shortcut]\nfrom=0\n",
              c=1, h=2, w=4)


def test_route_after_mismatched_sizes_has_no_image_for_an_image_layer():
    with pytest.raises(CfgError, match="must output an image"):
        build("[activation]\n[upsample]\n[route]\nlayers=0,1\n[upsample]\n")


# ====================================================================== info table
def test_describe_rows():
    net = build("[activation]\n[upsample]\n[route]\nlayers=-1,1\n[reorg]\nstride=2\n"
                "[upsample]\nstride=-2\n[shortcut]\nfrom=-2\n", c=2, h=2, w=2)
    rows = [layer.describe() for layer in net.layers]
    assert rows[1][1] == "2x" and rows[1][3] == "4 x 4 x 2"
    assert rows[2][2] == "layers 1 1"
    assert rows[3][1] == "/2" and rows[3][3] == "2 x 2 x 16"
    assert rows[4][1] == "/2"
    assert rows[5][0] == "res 3"
    assert net.layers[5].flops() == 0      # pjreddie counts no BFLOPs for a shortcut


# ====================================================================== exact gradients
def fd_check(net, train=True, samples=24, eps=1e-6, rtol=1e-6, seed=0):
    """input_delta and every weight_updates of one exact backward against central differences
    of net.objective (delta = -gradient); returns the analytic input delta."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (net.batch, net.c, net.h, net.w))
    truth = rng.normal(0, 1, (net.batch, net.truths))

    def objective():
        net.rng = np.random.default_rng(11)     # the same crop window every time
        net.forward(x, truth, train=train)
        return net.objective

    params = {i: layer for i, layer in enumerate(net.layers)
              if getattr(layer, "weight_updates", None) is not None}
    for layer in params.values():
        layer.weight_updates[...] = 0
    objective()
    net.backward()
    analytic = {"input": net.input_delta.copy()}
    targets = {"input": x}
    for i, layer in params.items():
        analytic[i] = layer.weight_updates.copy()
        targets[i] = layer.weights
    for name, array in targets.items():
        flat = array.reshape(-1)
        picks = rng.choice(flat.size, min(samples, flat.size), replace=False)
        numeric = -numeric_gradient(objective, array, picks, eps)
        got = analytic[name].reshape(-1)[picks]
        scale = max(np.abs(numeric).max(), np.abs(got).max(), 1e-3)
        err = np.abs(got - numeric).max()
        assert err <= rtol * scale + 1e-9, \
            f"{name}: max |analytic - numeric| = {err:.3g} (scale {scale:.3g})\n" \
            f"analytic {got}\nnumeric  {numeric}"
    return analytic["input"]


TANH = "[activation]\nactivation=tanh\n"
LOGISTIC = "[activation]\nactivation=logistic\n"
COST = "[cost]\n"

GRADIENT_CASES = {
    "route": (TANH + LOGISTIC + "[route]\nlayers=-1,0\n" + TANH, dict(c=2, h=3, w=3)),
    "route_groups": (TANH + LOGISTIC + "[route]\nlayers=0,1,0\ngroups=2\ngroup_id=1\n",
                     dict(c=4, h=2, w=3)),
    "route_unequal_sizes": (TANH + "[upsample]\n[route]\nlayers=0,1,0\n" + TANH,
                            dict(c=2, h=2, w=2)),
    "shortcut_pj": (TANH + LOGISTIC + "[shortcut]\nfrom=0\nalpha=0.7\nbeta=-1.3\n"
                    "activation=tanh\n", dict(c=2, h=3, w=2)),
    "shortcut_pj_from_fewer_channels": (TANH + "[route]\nlayers=0,0\n" + LOGISTIC +
                                        "[shortcut]\nfrom=0\nalpha=0.5\nbeta=2\n"
                                        "activation=leaky\n", dict(c=2, h=2, w=2)),
    "shortcut_pj_from_more_channels": (TANH + "[route]\nlayers=0\ngroups=2\n" + LOGISTIC +
                                       "[shortcut]\nfrom=0\nalpha=0.5\nbeta=2\n",
                                       dict(c=2, h=2, w=3)),
    "shortcut_pj_from_larger": (TANH + "[upsample]\nstride=-2\n[shortcut]\nfrom=0\n"
                                "alpha=0.5\nbeta=1.5\nactivation=tanh\n", dict(c=2, h=4, w=4)),
    "shortcut_pj_from_smaller": (TANH + "[upsample]\nstride=2\nscale=0.7\n[shortcut]\nfrom=0\n"
                                 "alpha=0.5\nbeta=1.5\nactivation=logistic\n",
                                 dict(c=2, h=2, w=2)),
    "shortcut_ab_multi": (TANH + "[route]\nlayers=0\ngroups=2\ngroup_id=1\n[route]\nlayers=0\n"
                          + LOGISTIC + "[shortcut]\nfrom=1,2\nactivation=tanh\n",
                          dict(c=4, h=2, w=2)),
    "upsample_down_up": (TANH + "[upsample]\nstride=-2\nscale=0.5\n[upsample]\nstride=2\n"
                         "scale=1.5\n[shortcut]\nfrom=0\n", dict(c=2, h=4, w=4)),
    "reorg": (TANH + "[reorg]\nstride=2\n[route]\nlayers=1,0\n", dict(c=4, h=4, w=2)),
    "reorg_reverse": (TANH + "[reorg]\nstride=2\nreverse=1\n[route]\nlayers=1,0\n",
                      dict(c=8, h=2, w=2)),
    "reorg_flatten": (TANH + "[reorg]\nflatten=1\n[route]\nlayers=1,0\n", dict(c=3, h=2, w=2)),
    "reorg_flatten_reverse": (TANH + "[reorg]\nflatten=1\nreverse=1\n[route]\nlayers=1,0\n",
                              dict(c=3, h=2, w=2)),
    "reorg_extra": (TANH + "[reorg]\nextra=3\n[route]\nlayers=1,0\n", dict(c=2, h=2, w=2)),
    "reorg3d": (TANH + "[reorg3d]\nstride=2\n[route]\nlayers=1,0\n", dict(c=3, h=4, w=2)),
    "reorg3d_reverse": (TANH + "[reorg3d]\nstride=2\nreverse=1\n[route]\nlayers=1,0\n",
                        dict(c=16, h=1, w=2)),
    "crop_train_flip": ("[crop]\ncrop_height=2\ncrop_width=3\nflip=1\n" + TANH,
                        dict(c=2, h=4, w=5)),
    "crop_inference": ("[crop]\ncrop_height=3\ncrop_width=2\n" + TANH, dict(c=2, h=4, w=5)),
    "lrn_size5": (TANH + "[lrn]\nsize=5\nalpha=0.3\nbeta=0.75\nkappa=2\n[shortcut]\nfrom=0\n",
                  dict(c=7, h=2, w=1)),
    "lrn_size4": (TANH + "[normalization]\nsize=4\nalpha=0.5\nbeta=1.5\nkappa=1.5\n",
                  dict(c=5, h=1, w=2)),
    "scale_channels": (TANH + "[avgpool]\n" + LOGISTIC + "[scale_channels]\nfrom=0\n"
                       "activation=tanh\n", dict(c=3, h=2, w=2)),
    "scale_channels_wh": (TANH + "[route]\nlayers=0\ngroups=3\n" + LOGISTIC +
                          "[scale_channels]\nfrom=0\nscale_wh=1\nactivation=leaky\n",
                          dict(c=3, h=2, w=2)),
    "sam": (TANH + LOGISTIC + "[sam]\nfrom=0\nactivation=tanh\n", dict(c=2, h=2, w=2)),
    "empty": (TANH + "[empty]\n" + LOGISTIC + "[silence]\n[route]\nlayers=0,-1\n",
              dict(c=2, h=1, w=3)),
    "empty_first": ("[silence]\n" + TANH, dict(c=2, h=1, w=3)),
    "implicit": ("[implicit]\nfilters=2\natoms=3\nstd=1\n" + TANH, dict(c=1, h=1, w=1)),
}


@pytest.mark.parametrize("name", sorted(GRADIENT_CASES))
def test_exact_gradients_match_finite_differences(name, f64):
    body, dims = GRADIENT_CASES[name]
    net = build(body + COST, gradients="exact", **dims)
    delta = fd_check(net, train=name != "crop_inference")
    if name != "implicit":
        assert np.abs(delta).max() > 1e-3        # the check saw a real gradient


@pytest.mark.parametrize("wt, wn", [("per_feature", "none"), ("per_feature", "relu"),
                                    ("per_feature", "softmax"), ("per_channel", "relu"),
                                    ("per_channel", "softmax"), ("per_channel", "none")])
def test_exact_gradients_of_weighted_shortcut(wt, wn, f64):
    body = (TANH + "[route]\nlayers=0\ngroups=2\ngroup_id=1\n[route]\nlayers=0\n" + LOGISTIC +
            f"[shortcut]\nfrom=1,2\nweights_type={wt}\nweights_normalization={wn}\n"
            f"activation=tanh\n" + COST)
    net = build(body, gradients="exact", c=4, h=2, w=2)
    layer = net.layers[4]
    rng = np.random.default_rng(8)
    # away from relu's kink and from softmax ties
    layer.weights[...] = rng.uniform(0.3, 1.5, layer.weights.shape) * \
        rng.choice([-1, 1], layer.weights.shape)
    layer.weights[0] = np.abs(layer.weights[0])
    fd_check(net)


def test_darknet_shortcut_gradient_differs_from_exact_outside_the_overlap(f64):
    body = TANH + "[route]\nlayers=0,0\n" + LOGISTIC + "[shortcut]\nfrom=0\nalpha=0.5\n" + COST
    deltas = {}
    for mode in ("darknet", "exact"):
        net = build(body, gradients=mode, c=2, h=1, w=2)
        rng = np.random.default_rng(0)
        net.forward(rng.normal(0, 1, (2, 2, 1, 2)), rng.normal(0, 1, (2, 8)), train=True)
        net.backward()
        deltas[mode] = net.layers[2].delta.copy()
    # exact: 0.5*d on the 2 overlapping channels, d on the 2 others; Darknet: 0.5*d everywhere
    ratio = deltas["darknet"] / deltas["exact"]
    np.testing.assert_allclose(ratio[:, :2], 1.0)
    np.testing.assert_allclose(ratio[:, 2:], 0.5)


# ====================================================================== golden cases
def golden_net(case):
    folder = need_shared(GOLDEN / case)
    net = minidarknet.load(folder / "net.cfg", weights=folder / "net.weights")
    x = np.fromfile(folder / "input.f32", "<f4").reshape(net.batch, net.c, net.h, net.w)
    truth = folder / "truth.f32"
    truth = np.fromfile(truth, "<f4").reshape(net.batch, -1) if truth.exists() else None
    return net, x, truth, np.load(folder / "expected.npz")


def close(got, expected):
    err = np.abs(np.asarray(got, np.float64).reshape(expected.shape) - expected).max()
    return err <= 1e-4 * np.abs(expected).max() + 1e-6


@pytest.mark.parametrize("case", ["reorg_forward", "shortcut_route_upsample_forward"])
def test_golden_forward_outputs(case):
    net, x, _, expected = golden_net(case)
    net.forward(x)
    for i, layer in enumerate(net.layers):
        assert close(layer.output, expected[f"layer{i:02d}_output"]), f"layer {i} output"


def test_golden_train_delta_reaching_every_layer():
    """layerNN_delta_in: the delta each layer holds just before its backward, i.e. what the
    later layers (routes adding into sources, the shortcut into its from layer, upsample
    summing blocks) left there."""
    net, x, truth, expected = golden_net("shortcut_route_upsample_train")
    net.seen += net.batch
    net.forward(x, truth, train=True)
    reached = {}
    for i, layer in enumerate(net.layers):
        original = type(layer).backward

        def snapshot(n, layer=layer, i=i, original=original):
            reached[i] = layer.delta.copy()
            original(layer, n)
        layer.backward = snapshot
    try:
        net.backward()
    finally:
        for layer in net.layers:
            del layer.backward
    for i in range(len(net.layers)):
        assert close(reached[i], expected[f"layer{i:02d}_delta_in"]), f"layer {i} delta_in"
    assert close(net.input_delta, expected["input_delta"])


def test_golden_network_exact_gradients(f64):
    """The shortcut/route/upsample golden network in exact mode: the true gradient (Darknet's
    1x1-convolution overwrite, which loses the skip gradient, is not reproduced)."""
    folder = need_shared(GOLDEN / "shortcut_route_upsample_train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DarknetWarning)
        net = minidarknet.load(folder / "net.cfg", weights=folder / "net.weights",
                               gradients="exact", batch=1)
    fd_check(net, samples=12)
