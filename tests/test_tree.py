"""Class hierarchies (minidarknet/tree.py): read_tree's groups, the group-wise softmax of
[softmax] and [region] with tree=, hierarchy decoding, class maps, and the missing-file
errors, on a small tree written here (values checked by hand)."""
import warnings

import numpy as np
import pytest

from conftest import numeric_gradient

import minidarknet
from minidarknet.errors import CfgError, DarknetWarning
from minidarknet.tree import parse_tree_text

F32 = np.float32

# node: 0 animal, 1 plant, 2 dog, 3 cat, 4 rose, 5 tulip, 6 daisy, 7 poodle
TREE = "animal -1\nplant -1\ndog 0\ncat 0\nrose 1\ntulip 1\ndaisy 1\npoodle 2\n"


@pytest.fixture
def tree_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "small.tree").write_text(TREE)
    return tmp_path


def build(text, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DarknetWarning)
        return minidarknet.loads(text, seed=0, **options)


def softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def group_softmax(z):
    """The reference: softmax over (0, 1), (2, 3), (4, 5, 6), (7,)."""
    out = np.empty_like(z, dtype=np.float64)
    for a, b in ((0, 2), (2, 4), (4, 7), (7, 8)):
        out[a:b] = softmax(z[a:b].astype(np.float64))
    return out


def test_read_tree_groups_children_and_leaves():
    tree = parse_tree_text(TREE)
    assert tree.n == 8
    assert tree.parent.tolist() == [-1, -1, 0, 0, 1, 1, 1, 2]
    assert tree.group.tolist() == [0, 0, 1, 1, 2, 2, 2, 3]
    assert tree.group_offset.tolist() == [0, 2, 4, 7]
    assert tree.group_size.tolist() == [2, 2, 3, 1]
    assert tree.child.tolist() == [1, 2, 3, -1, -1, -1, -1, -1]
    assert tree.leaf.tolist() == [False, False, False, True, True, True, True, True]


def test_read_tree_parsing_rules():
    # a name without a parent is a root (sscanf leaves -1); text after the number is ignored
    tree = parse_tree_text("a\nb 0x\n")
    assert tree.parent.tolist() == [-1, 0]
    with pytest.raises(CfgError, match=r"^t.tree:2: node 'b' has parent 5"):
        parse_tree_text("a -1\nb 5\n", "t.tree")


def test_hierarchy_predictions_multiply_down_the_paths():
    tree = parse_tree_text(TREE)
    p = np.array([.6, .4, .7, .3, .5, .3, .2, 1.], F32)
    absolute = tree.hierarchy_predictions(p)
    np.testing.assert_allclose(absolute, [.6, .4, .42, .18, .2, .12, .08, .42], rtol=1e-6)
    leaves = tree.hierarchy_predictions(p, only_leaves=True)
    np.testing.assert_allclose(leaves, [0, 0, 0, .18, .2, .12, .08, .42], rtol=1e-6)
    np.testing.assert_array_equal(p, np.array([.6, .4, .7, .3, .5, .3, .2, 1.], F32))


def test_top_prediction_descends_while_the_product_stays_above_thresh():
    """Darknet runs hierarchy_top_prediction on the ABSOLUTE probabilities that
    hierarchy_predictions left, so its running product counts every ancestor again."""
    tree = parse_tree_text(TREE)
    rows = np.array([
        [.6, .4, .7, .3, .5, .3, .2, 1.],    # .6 -> .6*.42 -> .252*.42 = .106 > .1: poodle 7
        [.6, .4, .7, .3, .5, .3, .2, .5],    # poodle: .252*.21 = .053: stops, parent dog 2
        [.2, .8, .5, .5, .3, .3, .4, 1.],    # .8 -> .8*.32 = .256 (daisy, a leaf): 6
        [.1, .2, .5, .5, .3, .3, .4, 1.],    # .2 -> .2*.08 = .016: stops, parent plant 1
        [.05, .08, .5, .5, .3, .3, .4, 1.],  # group 0's best .08 <= .1: that node, 1
        [0., 0., .5, .5, .3, .3, .4, 1.],    # nothing above 0 in group 0: node 0
    ], F32)
    absolute = tree.hierarchy_predictions(rows)
    assert tree.top_prediction(absolute, .1).tolist() == [7, 2, 6, 1, 1, 0]
    # at .3 the first row already stops below dog: .6*.42 = .252
    assert tree.top_prediction(absolute, .3).tolist() == [0, 0, 1, 1, 1, 0]


def test_softmax_layer_with_tree(tree_dir):
    net = build("[net]\nbatch=2\ninputs=8\n\n[softmax]\ntree=data/small.tree\n")
    z = np.random.default_rng(0).normal(0, 2, (2, 8)).astype(F32)
    out = net.forward(z)
    for row, logits in zip(out.reshape(2, 8), z):
        np.testing.assert_allclose(row, group_softmax(logits), rtol=1e-6)


def test_softmax_tree_exact_gradient_matches_finite_differences(tree_dir):
    """Exact mode: input_delta = -d objective/dz with objective = -sum t log p."""
    net = build("[net]\nbatch=1\ninputs=8\n\n[softmax]\ntree=data/small.tree\n",
                gradients="exact")
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1, (1, 8)).astype(F32)
    t = np.zeros((1, 8), F32)
    t[0, [0, 2, 7]] = 1                        # animal -> dog -> poodle
    net.forward(z, t, train=True)
    net.backward()

    def objective(v):
        return -np.sum(t[0] * np.log(group_softmax(v)))

    v = z[0].astype(np.float64)
    numeric = numeric_gradient(lambda: objective(v), v, eps=1e-4)
    np.testing.assert_allclose(net.input_delta[0], -numeric, rtol=1e-3, atol=1e-5)


def test_softmax_tree_smaller_than_inputs_leaves_zeros(tree_dir):
    with pytest.warns(DarknetWarning, match="the tree has 8 nodes for 10 inputs"):
        net = minidarknet.loads("[net]\nbatch=1\ninputs=10\n\n[softmax]\ntree=data/small.tree\n")
    out = net.forward(np.ones((1, 10), F32))
    np.testing.assert_array_equal(out.reshape(-1)[8:], 0)
    with pytest.raises(CfgError, match="the tree has 8 nodes, more than the 6 inputs"):
        build("[net]\nbatch=1\ninputs=6\n\n[softmax]\ntree=data/small.tree\n")


def test_missing_tree_is_one_line_naming_line_key_and_resolved_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "net.cfg"
    cfg.write_text("[net]\nbatch=1\ninputs=8\n\n[softmax]\ngroups=1\ntree=data/9k.tree\n")
    with pytest.raises(CfgError) as info:
        minidarknet.load(cfg)
    message = str(info.value)
    assert message.startswith(f"{cfg}:7: [softmax] tree=data/9k.tree: cannot open the tree "
                              f"file {tmp_path / 'data' / '9k.tree'}")
    assert "\n" not in message


REGION = """[net]
batch=1
width=2
height=2
channels=13

[region]
anchors=1,1
classes=8
coords=4
num=1
softmax=1
tree=data/small.tree
"""


def test_region_with_tree_softmaxes_each_group_and_decodes_the_hierarchy(tree_dir):
    net = build(REGION)
    layer = net.layers[0]
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (1, 13, 2, 2)).astype(F32)
    # cell 0: animal, dog, poodle clearly ahead; objectness logit 2
    x[0, 4, 0, 0] = 2
    x[0, 5:13, 0, 0] = [3, -3, 3, -3, 0, 0, 0, 5]
    out = net.forward(x)
    planes = out.reshape(13, 4)
    for cell in range(4):
        np.testing.assert_allclose(planes[5:, cell], group_softmax(x[0, 5:, cell // 2, cell % 2]),
                                   rtol=1e-6)
    np.testing.assert_allclose(planes[4], 1 / (1 + np.exp(-x[0, 4].reshape(-1))), rtol=1e-6)
    dets = net.detections(thresh=.5, hier=.5, nms=0)
    assert len(dets) == 4
    obj = 1 / (1 + np.exp(-2))
    assert np.flatnonzero(dets[0].prob).tolist() == [7]
    assert dets[0].prob[7] == pytest.approx(obj, rel=1e-6)
    assert net.layers[0].output.reshape(13, 4)[5:, 0] == pytest.approx(planes[5:, 0])
    with pytest.raises(CfgError, match="tree=data/small.tree: training with a class hierarchy"):
        net.forward(x, np.zeros((1, layer.truths), F32), train=True)


def test_region_tree_must_match_classes(tree_dir):
    with pytest.raises(CfgError, match="the tree has 8 nodes but classes=7"):
        build(REGION.replace("classes=8", "classes=7").replace("channels=13", "channels=12"))


def test_region_map_is_read_like_darknet_and_training_refused(tree_dir):
    (tree_dir / "data" / "c.map").write_text("3\n  7\nx\n")
    net = build(REGION.replace("tree=data/small.tree", "map=data/c.map"))
    assert net.layers[0].class_map.tolist() == [3, 7, 0]
    with pytest.raises(CfgError, match="map=data/c.map: training with a class map"):
        net.forward(np.zeros((1, 13, 2, 2), F32), np.zeros((1, net.layers[0].truths), F32),
                    train=True)
    with pytest.raises(CfgError, match=r"map=data/none.map: cannot open the class map .*none"):
        build(REGION.replace("tree=data/small.tree", "map=data/none.map"))
