"""cfg overrides: addressing [net], layer types (with aliases) and layer indices; values as cfg
text; errors that name the override."""
import warnings

import numpy as np
import pytest

import minidarknet
from minidarknet.cfg import parse_cfg_text
from minidarknet.errors import CfgError, DarknetWarning, MiniDarknetError
from minidarknet.overrides import (apply_overrides, format_value, parse_override_args,
                                   parse_override_key)

CFG = """
[net]
batch=4
width=4
height=1
channels=1
learning_rate=0.1
policy=steps
steps=10,20
scales=.1,.1

[connected]
output=6
activation=leaky

[l2norm]

[conn]
output=3
activation=linear

[softmax]
"""


def sections():
    return parse_cfg_text(CFG, "t.cfg")


def values(section):
    return {o.key: o.value for o in section.options}


def test_net_key_replaces_the_value_darknet_reads():
    s = apply_overrides(sections(), {"net.learning_rate": 0.01, "network.batch": 8})
    assert values(s[0])["learning_rate"] == "0.01"
    assert values(s[0])["batch"] == "8"
    assert s[0].float("learning_rate") == pytest.approx(0.01)


def test_type_key_reaches_every_section_of_that_type_with_aliases():
    s = apply_overrides(sections(), {"connected.activation": "relu"})
    assert values(s[1])["activation"] == "relu"
    assert values(s[3])["activation"] == "relu"      # written [conn] in the file
    s = apply_overrides(sections(), {"conn.output": 5})
    assert values(s[1])["output"] == "5" and values(s[3])["output"] == "5"


def test_layer_index_counts_layers_from_zero_and_from_the_end():
    s = apply_overrides(sections(), {"layers[0].output": 7, "layers[-2].output": 2})
    assert values(s[1])["output"] == "7"
    assert values(s[3])["output"] == "2"


def test_missing_key_is_added_to_the_section():
    s = apply_overrides(sections(), {"l2norm.backward": "exact"})
    assert values(s[2]) == {"backward": "exact"}
    assert s[2].str("backward") == "exact"


def test_values_become_cfg_text():
    assert format_value([300, 400]) == "300,400"
    assert format_value((0.1, 0.5)) == "0.1,0.5"
    assert format_value(True) == "1" and format_value(False) == "0"
    assert format_value(" leaky ") == "leaky"
    assert format_value(np.float32(0.5)) == "0.5"
    assert format_value(1e-5) == "1e-05"
    for bad in ([], "", float("nan"), None, {"a": 1}, "a\nb"):
        with pytest.raises(ValueError):
            format_value(bad)


def test_list_value_overrides_a_list_key():
    s = apply_overrides(sections(), {"net.steps": [5, 15], "net.scales": [0.5, 0.5]})
    assert s[0].ints("steps") == [5, 15]
    assert s[0].floats("scales") == [0.5, 0.5]


@pytest.mark.parametrize("key, message", [
    ("convolutional.filters", "matches no section (layer types in the cfg: connected, l2norm, "
                              "conn, softmax)"),
    ("layers[4].size", "matches no section (the cfg has layers 0..3)"),
    ("layers[-5].size", "matches no section (the cfg has layers 0..3)"),
    ("learning_rate", "expected net.KEY, TYPE.KEY or layers[i].KEY"),
    ("net.", "expected net.KEY"),
    ("layers[x].size", "expected net.KEY"),
])
def test_an_override_that_matches_nothing_is_an_error_naming_it(key, message):
    with pytest.raises(CfgError) as info:
        apply_overrides(sections(), {key: 1})
    assert f"'{key}'" in str(info.value)
    assert message in str(info.value)
    assert str(info.value).startswith("t.cfg: ")


def test_bad_value_is_an_error_naming_the_override():
    with pytest.raises(MiniDarknetError, match="override 'net.steps': an empty list"):
        apply_overrides(sections(), {"net.steps": []})


def test_parse_override_key():
    assert parse_override_key("net.batch") == ("net", None, "batch")
    assert parse_override_key("l2norm.backward") == ("type", "l2norm", "backward")
    assert parse_override_key("layers[3].size") == ("layer", 3, "size")
    assert parse_override_key("layers[-1].size") == ("layer", -1, "size")


def test_parse_override_args_reads_yaml_scalars():
    assert parse_override_args(["net.learning_rate=0.01", "l2norm.backward=exact",
                                "net.steps=[1, 2]", "net.policy="]) == {
        "net.learning_rate": 0.01, "l2norm.backward": "exact", "net.steps": [1, 2],
        "net.policy": ""}
    with pytest.raises(ValueError):
        parse_override_args(["net.batch"])


def test_load_applies_overrides_before_building(write_cfg):
    path = write_cfg(CFG)
    net = minidarknet.load(path, overrides={"layers[0].output": 9, "net.batch": 2,
                                            "l2norm.backward": "scales"})
    assert net.layers[0].outputs == 9
    assert net.layers[1].outputs == 9
    assert net.batch == 2
    assert net.layers[1].backward_mode == "scales"
    net = minidarknet.loads(CFG, overrides={"net.learning_rate": 0.5})
    assert net.learning_rate == pytest.approx(0.5)


def test_overridden_key_that_no_layer_reads_is_warned_as_unused(write_cfg):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DarknetWarning)
        minidarknet.load(write_cfg(CFG), overrides={"softmax.nonsense": 3})
    assert any("unused key 'nonsense=3'" in str(w.message) for w in caught)


def test_an_invalid_overridden_value_fails_where_the_layer_reads_it(write_cfg):
    with pytest.raises(CfgError, match=r"\[l2norm\] backward=sideways"):
        minidarknet.load(write_cfg(CFG), overrides={"l2norm.backward": "sideways"})
