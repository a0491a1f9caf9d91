"""Overriding cfg keys from Python or an experiment file, without editing the cfg.

    apply_overrides(sections, {"net.learning_rate": 0.01,      # the [net] section
                               "l2norm.backward": "exact",     # every [l2norm] section
                               "conv.filters": 32,             # every [convolutional] (aliases)
                               "layers[3].size": 5,            # the 4th layer (0-based)
                               "net.steps": [300, 400]})       # lists are comma-joined

A key `TYPE.KEY` matches every section of that layer type, whichever of Darknet's names it is
written with ([conv] and [convolutional] are the same type).  `layers[i]` counts layers from 0
as Darknet's layer indices do ([net] is not a layer); a negative i counts from the end.
A value replaces the first occurrence of the key (the one Darknet reads) or is added to the
section.  Values are written as cfg text: numbers as Python prints them, booleans as 1/0,
strings with their spaces removed (Darknet strips every space), lists comma-joined.
Anything that matches no section, or a value that cannot be cfg text, is an error naming the
override.  Keys the layer does not read are then warned about as unused when the network is
built, as for keys written in the file.
"""
import math
import re

from .errors import CfgError

_KEY = re.compile(r"^(?:layers\[\s*([+-]?\d+)\s*\]|([A-Za-z_][A-Za-z0-9_]*))"
                  r"\.([A-Za-z_][A-Za-z0-9_]*)$")
_NET = ("net", "network")


def parse_override_key(key):
    """'net.KEY' -> ("net", None, KEY); 'TYPE.KEY' -> ("type", TYPE, KEY);
    'layers[i].KEY' -> ("layer", i, KEY).  Raises ValueError for anything else."""
    match = _KEY.match(str(key).strip())
    if not match:
        raise ValueError(f"override '{key}': expected net.KEY, TYPE.KEY or layers[i].KEY")
    index, type_, option = match.groups()
    if index is not None:
        return "layer", int(index), option
    if type_ in _NET:
        return "net", None, option
    return "type", type_, option


def format_value(value, key="?"):
    """A Python value as the text of a cfg value."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"override '{key}': an empty list is not a cfg value")
        return ",".join(format_value(item, key) for item in value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"override '{key}': {value} is not a usable cfg number")
        return repr(value)
    if isinstance(value, str):
        text = "".join(value.split())   # Darknet removes every space and tab
        if not text:
            raise ValueError(f"override '{key}': an empty value is not allowed")
        if "\n" in value or "\r" in value:
            raise ValueError(f"override '{key}': a value must be one line")
        return text
    if hasattr(value, "item") and callable(value.item):   # numpy scalars
        return format_value(value.item(), key)
    raise ValueError(f"override '{key}': cannot write a {type(value).__name__} "
                     f"({value!r}) as a cfg value")


def _same_type_names(type_):
    """Every section name that builds the same layer type as `type_` (Darknet's aliases)."""
    from .layers import LAYER_TYPES
    cls = LAYER_TYPES.get(type_)
    if cls is None:
        return {type_}
    return {name for name, other in LAYER_TYPES.items() if other is cls}


def select_sections(sections, kind, selector):
    """The sections an override key addresses (an empty list when none)."""
    if kind == "net":
        return [sections[0]] if sections and sections[0].type in _NET else []
    layers = sections[1:]
    if kind == "layer":
        index = selector + len(layers) if selector < 0 else selector
        return [layers[index]] if 0 <= index < len(layers) else []
    names = _same_type_names(selector)
    return [s for s in layers if s.type in names]


def set_option(section, key, text):
    """Replace the value Darknet reads for `key` (its first occurrence), or add the key."""
    for option in section.options:
        if option.key == key:
            option.value = text
            return
    section.add(key, text, section.line)


def apply_overrides(sections, overrides):
    """Edit parsed cfg sections (from read_cfg / parse_cfg_text) in place; returns them.

    `overrides` is a mapping {key: value} (see the module doc) or None."""
    if not overrides:
        return sections
    path = sections[0].path if sections else "<cfg>"
    for key, value in dict(overrides).items():
        try:
            kind, selector, option = parse_override_key(key)
            text = format_value(value, key)
        except ValueError as e:
            raise CfgError(path, 0, str(e)) from None
        targets = select_sections(sections, kind, selector)
        if not targets:
            raise CfgError(path, 0, f"override '{key}' matches no section "
                                    f"({_what_is_there(sections, kind)})")
        for section in targets:
            set_option(section, option, text)
    return sections


def _what_is_there(sections, kind):
    layers = sections[1:]
    if kind == "layer":
        return f"the cfg has layers 0..{len(layers) - 1}" if layers else "the cfg has no layers"
    if kind == "net":
        return "the cfg has no [net] section"
    types = []
    for section in layers:
        if section.type not in types:
            types.append(section.type)
    return "layer types in the cfg: " + (", ".join(types) or "none")


def parse_override_args(items):
    """['net.learning_rate=0.01', 'l2norm.backward=exact'] -> a dict, values read as YAML
    scalars or lists ('0.01' -> 0.01, '[1,2]' -> [1, 2]); for command-line options."""
    import yaml
    result = {}
    for item in items:
        key, eq, value = str(item).partition("=")
        if not eq or not key.strip():
            raise ValueError(f"override '{item}': expected KEY=VALUE")
        try:
            parsed = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError:
            parsed = value
        result[key.strip()] = value if parsed is None else parsed
    return result
