"""The cfg reader: Darknet's syntax (spec section 1) and one-line FILE:LINE errors and warnings,
through the library (minidarknet.loads / load) and through the CLI (`minidarknet info CFG`)."""
import re
import warnings

import pytest

import minidarknet
from minidarknet import CfgError, DarknetWarning
from minidarknet.cfg import parse_cfg_text, read_cfg
from minidarknet.layers import LAYER_TYPES

NET = "[net]\nbatch=2\nwidth=4\nheight=4\nchannels=1\n"   # lines 1-5; the next line is 6


def build(text, path="t.cfg", **options):
    """Build a network from cfg text; returns (net, [warning messages])."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = minidarknet.loads(text, path=path, **options)
    messages = [str(w.message) for w in caught if issubclass(w.category, DarknetWarning)]
    return net, messages


def error_of(text, path="t.cfg"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CfgError) as info:
            minidarknet.loads(text, path=path)
    message = str(info.value)
    assert "\n" not in message and message
    return message


# ------------------------------------------------------------------ Darknet's syntax

def test_spaces_and_tabs_are_removed_inside_lines():
    net, _ = build(NET + "[conn]\n  out put \t=\t 7 \nactivation = le aky\n")
    assert net.layers[0].outputs == 7
    assert net.layers[0].activation.name == "leaky"


def test_list_values_with_spaces():
    sections = parse_cfg_text("[net]\n[route]\nlayers = -1, 61\nscales=.1, 10\n")
    assert sections[1].ints("layers") == [-1, 61]
    assert sections[1].floats("scales") == [0.1, 10.0]


def test_list_trailing_comma_reads_zero_with_warning():
    section = parse_cfg_text("[net]\n[route]\nlayers=-1,\n", "r.cfg")[1]
    with pytest.warns(DarknetWarning, match=r"^r\.cfg:3: empty item in 'layers=-1,'"):
        assert section.ints("layers") == [-1, 0]


@pytest.mark.parametrize("comment", ["# a comment", "; another", "   # indented", "\t;tab"])
def test_comment_lines_are_ignored(comment):
    net, messages = build(comment + "\n" + NET + comment + "\n[conn]\n" + comment +
                          "\noutput=3\n")
    assert net.layers[0].outputs == 3
    assert not messages


def test_blank_lines_keep_line_numbers():
    message = error_of("\n\n" + NET + "\n\n[conn]\noutput=x\n")
    assert message.startswith("t.cfg:11: ")


def test_crlf_line_endings():
    net, messages = build((NET + "[connected]\noutput=3\nactivation=relu\n").replace("\n", "\r\n"))
    assert net.layers[0].outputs == 3
    assert net.layers[0].activation.name == "relu"
    assert not messages


@pytest.mark.parametrize("header", ["[net]", "[network]"])
def test_net_or_network_first(header):
    net, _ = build(NET.replace("[net]", header) + "[conn]\noutput=2\n")
    assert (net.w, net.h, net.c, net.batch) == (4, 4, 1, 2)


# Darknet's section aliases (spec 1.5): alias -> full name.
ALIASES = {"conv": "convolutional", "conn": "connected", "max": "maxpool", "avg": "avgpool",
           "soft": "softmax", "deconv": "deconvolutional", "lrn": "normalization",
           "network": None}


@pytest.mark.parametrize("alias,full", [(a, f) for a, f in ALIASES.items() if f])
def test_section_aliases_map_to_the_same_layer(alias, full):
    assert LAYER_TYPES[alias] is LAYER_TYPES[full]


def test_alias_sections_build():
    net, _ = build(NET + "[conn]\noutput=4\n[soft]\n[avg]\n"
                   .replace("[avg]\n", ""))
    assert [l.type for l in net.layers] == ["connected", "softmax"]
    net, _ = build("[net]\nwidth=3\nheight=3\nchannels=2\n[avg]\n")
    assert net.layers[0].type == "avgpool" and net.layers[0].outputs == 2


def test_first_duplicate_key_wins_with_warning_naming_both_lines():
    net, messages = build(NET + "[conn]\noutput=3\nactivation=relu\noutput=9\n")
    assert net.layers[0].outputs == 3
    [message] = messages
    assert message.startswith("t.cfg:9: ")
    assert "output" in message and "line 7" in message and "'3'" in message


def test_duplicate_key_in_net_section():
    net, messages = build(NET + "batch=8\n[conn]\noutput=1\n")
    assert net.batch == 2
    assert any(m.startswith("t.cfg:6: ") and "batch" in m and "line 2" in m for m in messages)


@pytest.mark.parametrize("value,expected", [("416#comment", 416), ("416;x", None),
                                            ("3 # three", 3), ("+5", 5), ("6.0", 6)])
def test_numeric_value_with_inline_comment(value, expected):
    text = NET + f"[conn]\noutput={value}\n"
    if expected is None:
        assert "output=416;x" in error_of(text)
        return
    net, messages = build(text)
    assert net.layers[0].outputs == expected
    assert not messages


def test_string_value_with_inline_comment_warns():
    net, messages = build(NET + "[conn]\noutput=2\nactivation=relu # why\n")
    assert net.layers[0].activation.name == "relu"
    [message] = messages
    assert message.startswith("t.cfg:8: ") and "activation=relu" in message


def test_float_values():
    sections = parse_cfg_text("[net]\na=1e-3\nb=.5\nc=-2.\nd=7\ne=inf\n")
    s = sections[0]
    assert [s.float(k) for k in "abcd"] == [0.001, 0.5, -2.0, 7.0]
    assert s.float("e") == float("inf")
    assert s.float("missing", 0.25) == 0.25


def test_read_cfg_from_file(write_cfg):
    path = write_cfg(NET + "[conn]\noutput=5\n")
    net = minidarknet.load(path)
    assert net.layers[0].outputs == 5
    assert net.path == str(path)


# ------------------------------------------------------------------ errors: FILE:LINE: ...

ERRORS = {
    # name: (text, line, words the one-line message must contain)
    "unknown section": (NET + "[conn]\noutput=2\n[xyz]\nfoo=1\n", 8, ["[xyz]"]),
    "option before any section": ("width=4\n" + NET, 1, ["width=4", "before"]),
    "missing [net]": ("[conn]\noutput=2\n", 1, ["[conn]", "[net]"]),
    "[net] not first": ("[conn]\noutput=2\n" + NET, 1, ["[net]"]),
    "second [net]": (NET + "[conn]\noutput=1\n[network]\n", 8, ["[network]"]),
    "unknown activation": (NET + "[conn]\noutput=2\nactivation=lekay\n", 8,
                           ["activation", "lekay"]),
    "unknown activation with comment": (NET + "[conn]\noutput=2\nactivation=#relu\n", 8,
                                        ["activation"]),
    "empty value": (NET + "[conn]\noutput=\n", 7, ["output", "empty"]),
    "no =": (NET + "[conn]\noutput 3\n", 7, ["output3", "="]),
    "no key": (NET + "[conn]\n=3\n", 7, ["=3"]),
    "non-numeric int": (NET + "[conn]\noutput=three\n", 7, ["output=three"]),
    "non-integer int": (NET + "[conn]\noutput=2.5\n", 7, ["output=2.5"]),
    "non-numeric float": (NET + "[dropout]\nprobability=half\n", 7, ["probability=half"]),
    "non-numeric net": ("[net]\nbatch=1\nwidth=four\nheight=4\nchannels=1\n[conn]\n", 3,
                        ["width=four"]),
    "non-numeric list": (NET + "learning_rate=.1\npolicy=steps\nsteps=10,x\nscales=.1,.1\n"
                         "[conn]\n", 8, ["steps=10,x"]),
    "integer out of range": (NET + "[conn]\noutput=99999999999\n", 7, ["output=99999999999"]),
    "malformed header": (NET + "[conn\noutput=2\n", 6, ["[conn"]),
    "text after header": (NET + "[conn]x\noutput=2\n", 6, ["[conn]x"]),
    "empty header": (NET + "[]\n", 6, ["[]"]),
    "unknown policy": (NET + "policy=fast\n[conn]\n", 6, ["policy=fast"]),
    "no layers": (NET, 1, ["no layers"]),
    "bad output count": (NET + "[conn]\noutput=0\n", 7, ["output=0"]),
    "bad softmax groups": (NET + "[softmax]\ngroups=3\n", 7, ["groups=3"]),
    "bad cost type": (NET + "[conn]\n[cost]\ntype=cubic\n", 8, ["type=cubic"]),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_malformed_cfg_gives_one_line_error(name):
    text, line, words = ERRORS[name]
    message = error_of(text)
    assert message.startswith(f"t.cfg:{line}: "), message
    for word in words:
        assert word in message, (word, message)


def test_empty_file():
    assert error_of("") .startswith("t.cfg")
    assert "no sections" in error_of("# only a comment\n\n")


def test_error_names_the_path(write_cfg):
    path = write_cfg(NET + "[conn]\noutput=x\n", name="my net.cfg")
    with pytest.raises(CfgError) as info:
        minidarknet.load(path)
    assert str(info.value).startswith(f"{path}:7: ")
    assert info.value.path == str(path) and info.value.line == 7


def test_missing_file(tmp_path):
    with pytest.raises(CfgError, match="cannot read"):
        read_cfg(tmp_path / "nope.cfg")


def test_binary_file(tmp_path):
    path = tmp_path / "bin.cfg"
    path.write_bytes(b"[net]\nwidth=4\n\xff\xfe\x00\n")
    with pytest.raises(CfgError, match=r"bin\.cfg:3: not a text file"):
        read_cfg(path)
    path.write_bytes(b"[net]\nwidth=4\nheight=\x00\n")
    with pytest.raises(CfgError, match=r"bin\.cfg:3: not a text file \(NUL"):
        read_cfg(path)


# ------------------------------------------------------------------ warnings

def test_unknown_key_warns_unused():
    net, messages = build(NET + "[conn]\noutput=2\nfilters=16\n")
    [message] = messages
    assert message == "t.cfg:8: unused key 'filters=16' in [conn]"


def test_unknown_net_key_warns_unused():
    _, messages = build(NET + "widht=4\n[conn]\noutput=1\n")
    assert messages == ["t.cfg:6: unused key 'widht=4' in [net]"]


def test_generic_layer_keys_do_not_warn():
    _, messages = build(NET + "[conn]\noutput=2\nstopbackward=1\ndontload=1\ndontsave=1\n"
                        "learning_rate=.5\nonlyforward=0\ntruth=0\nsmooth=0\nclip=0\n"
                        "dontloadscales=0\nnumload=0\ndont_update=0\n")
    assert messages == []


# ------------------------------------------------------------------ the CLI: exit 2, one line

def run_cli(args, capsys):
    from minidarknet.cli import main
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code, out, err


CLI_ERRORS = ["unknown section", "option before any section", "missing [net]",
              "unknown activation", "empty value", "no =", "non-numeric int", "non-numeric net"]


@pytest.mark.parametrize("name", CLI_ERRORS)
def test_cli_info_bad_cfg_exits_2_with_one_line(name, write_cfg, capsys):
    text, line, words = ERRORS[name]
    path = write_cfg(text)
    code, out, err = run_cli(["info", str(path)], capsys)
    assert code == 2
    errors = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"error: {path}:{line}: ")
    assert "Traceback" not in err and "Traceback" not in out
    for word in words:
        assert word in errors[0]


def test_cli_info_warnings_are_one_line_each(write_cfg, capsys):
    path = write_cfg(NET + "[conn]\noutput=2\nfoo=1\noutput=3\n")
    code, out, err = run_cli(["info", str(path)], capsys)
    assert code == 0
    warning_lines = [l for l in err.splitlines() if l.startswith("warning: ")]
    assert any(re.match(rf"warning: {re.escape(str(path))}:8: unused key 'foo=1'", l)
               for l in warning_lines), err
    assert any(l.startswith(f"warning: {path}:9: duplicate key 'output'") for l in warning_lines)


def test_cli_info_missing_file(tmp_path, capsys):
    code, out, err = run_cli(["info", str(tmp_path / "missing.cfg")], capsys)
    assert code == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ number parsing edge cases

@pytest.mark.parametrize("value,expected", [("7", 7), ("-3", -3), ("+4", 4), ("6.0", 6),
                                            ("1e3", 1000), ("000000000000000000009", 9),
                                            ("2147483647", 2**31 - 1)])
def test_integer_values(value, expected):
    assert parse_cfg_text(f"[net]\nk={value}\n")[0].int("k") == expected


@pytest.mark.parametrize("value", ["2147483648", "-2147483648", "1e20", "9" * 5000])
def test_integer_out_of_range(value):
    section = parse_cfg_text(f"[net]\nk={value}\n", "n.cfg")[0]
    with pytest.raises(CfgError) as info:
        section.int("k")
    message = str(info.value)
    assert message.startswith("n.cfg:2: [net] k=") and "out of range" in message
    assert len(message) < 200


@pytest.mark.parametrize("value", ["1e400", "2.5", "nan", "0x10", "1,2", "--1", "abc"])
def test_integer_not_a_whole_number(value):
    section = parse_cfg_text(f"[net]\nk={value}\n", "n.cfg")[0]
    with pytest.raises(CfgError, match=r"^n\.cfg:2: \[net\] k=.*expected an integer"):
        section.int("k")


def test_list_error_names_the_whole_value_and_the_item():
    section = parse_cfg_text("[net]\n[yolo]\nmask=0,1,x2\n", "y.cfg")[1]
    with pytest.raises(CfgError) as info:
        section.ints("mask")
    assert str(info.value) == "y.cfg:3: [yolo] mask=0,1,x2: expected an integer (item 'x2')"
