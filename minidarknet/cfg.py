"""Reading Darknet .cfg files with Darknet's semantics and better error messages.

Darknet's rules (read_cfg / read_option): every space and tab inside a line is removed; a line
starting with `#` or `;` (or empty) is a comment; `[type]` opens a section; `key=value` splits at
the first `=`; the first occurrence of a duplicated key wins.  Where Darknet crashes or guesses,
we raise CfgError with `FILE:LINE: ...`; where Darknet warns, we warn with the same location.
"""
import math
import os
import re

from .errors import CfgError, warn

_SPACES = str.maketrans("", "", " \t\r\n")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf(inity)?|nan)",
                    re.IGNORECASE)


class Option:
    __slots__ = ("key", "value", "line", "used")

    def __init__(self, key, value, line):
        self.key, self.value, self.line, self.used = key, value, line, False


class Section:
    """One `[type]` section: its options in file order, with Darknet's first-wins lookups.

    Every getter marks the key as used, so `unused()` lists what no layer asked for."""

    def __init__(self, header, line, path):
        self.header = header          # as written, e.g. "[conv]"
        self.type = header[1:-1]      # e.g. "conv" (aliases are resolved by the layer registry)
        self.line = line
        self.path = path
        self.options = []
        self._first = {}

    # ------------------------------------------------------------------ building
    def add(self, key, value, line):
        option = Option(key, value, line)
        self.options.append(option)
        if key in self._first:
            first = self._first[key]
            warn(f"{self.path}:{line}: duplicate key '{key}' in {self.header}: "
                 f"the first value '{first.value}' (line {first.line}) is used, as in Darknet")
            option.used = True   # reported here already; not again as unused
        else:
            self._first[key] = option

    # ------------------------------------------------------------------ errors
    def error(self, message, key=None):
        option = self._first.get(key) if key else None
        return CfgError(self.path, option.line if option else self.line, message)

    def where(self, key=None):
        option = self._first.get(key) if key else None
        return f"{self.path}:{option.line if option else self.line}"

    # ------------------------------------------------------------------ lookups
    def has(self, key):
        return key in self._first

    def peek(self, key):
        """The value text (comment removed) without marking the key as used, or None."""
        option = self._first.get(key)
        return None if option is None else _strip_comment(option.value)

    def raw(self, key):
        """The value text with an inline `#comment` removed, or None when absent."""
        option = self._first.get(key)
        if option is None:
            return None
        option.used = True
        return _strip_comment(option.value)

    def int(self, key, default=0):
        text = self.raw(key)
        return default if text is None else self._number(key, text, integer=True)

    def float(self, key, default=0.0):
        text = self.raw(key)
        return default if text is None else self._number(key, text, integer=False)

    def str(self, key, default=None):
        option = self._first.get(key)
        if option is None:
            return default
        option.used = True
        text = _strip_comment(option.value)
        if text != option.value:
            warn(f"{self.path}:{option.line}: inline comment after '{key}={text}' ignored "
                 f"(Darknet would read the whole text '{option.value}')")
        return text

    def ints(self, key, default=None):
        return self._list(key, default, integer=True)

    def floats(self, key, default=None):
        return self._list(key, default, integer=False)

    def _list(self, key, default, integer):
        text = self.raw(key)
        if text is None:
            return default
        values = []
        for item in text.split(","):
            if item == "":
                warn(f"{self.where(key)}: empty item in '{key}={text}' reads as 0, as in Darknet")
                values.append(0 if integer else 0.0)
            else:
                values.append(self._number(key, item, integer, whole=text))
        return values

    def _number(self, key, text, integer, whole=None):
        shown = _short(whole or text)
        value = None
        if integer and _INT.fullmatch(text):
            # (a very long digit string is out of range without converting it all)
            value = int(text) if len(text.lstrip("+-0")) <= 12 else math.inf
        elif _FLOAT.fullmatch(text):
            value = float(text)
            if integer:
                # "6.0" or "1e3" is accepted for an integer key when it is a whole number.
                value = int(value) if math.isfinite(value) and value == int(value) else None
        if value is None:
            kind = "an integer" if integer else "a number"
            item = "" if whole is None else f" (item '{_short(text)}')"
            raise self.error(f"{self.header} {key}={shown}: expected {kind}{item}", key)
        if integer and abs(value) > 2**31 - 1:
            raise self.error(f"{self.header} {key}={shown}: integer out of range", key)
        return value

    def unused(self):
        return [o for o in self.options if not o.used]

    def warn_unused(self):
        for option in self.unused():
            warn(f"{self.path}:{option.line}: unused key '{option.key}={option.value}' "
                 f"in {self.header}")

    def __repr__(self):
        return f"<Section {self.header} at {self.path}:{self.line}>"


def _short(text, limit=60):
    """A value as quoted in a one-line message (very long values are cut)."""
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} characters)"


def _strip_comment(value):
    cut = value.find("#")
    return value if cut < 0 else value[:cut]


def parse_cfg_text(text, path="<cfg>"):
    """Split cfg text into sections; checks only syntax (the layer registry checks types)."""
    sections = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.translate(_SPACES)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            end = line.find("]")
            rest = line[end + 1:] if end > 0 else None
            if end < 0 or (rest and rest[0] not in "#;"):
                raise CfgError(path, number, f"malformed section header '{line}' "
                                             f"(expected [type])")
            sections.append(Section(line[:end + 1], number, path))
            continue
        if not sections:
            raise CfgError(path, number, f"option '{line}' before any [section]")
        key, eq, value = line.partition("=")
        if not eq:
            raise CfgError(path, number, f"line '{line}' in {sections[-1].header} has no '=' "
                                         f"(expected key=value)")
        if not key:
            raise CfgError(path, number, f"line '{line}' in {sections[-1].header} has no key")
        if not value:
            raise CfgError(path, number, f"key '{key}' in {sections[-1].header} has an empty value")
        sections[-1].add(key, value, number)
    if not sections:
        raise CfgError(path, 0, "no sections (is this a Darknet .cfg file?)")
    if sections[0].type not in ("net", "network"):
        raise CfgError(path, sections[0].line, f"first section is {sections[0].header}, "
                                               f"must be [net] or [network]")
    for section in sections[1:]:
        if section.type in ("net", "network"):
            raise CfgError(path, section.line, f"{section.header} may only be the first section")
    return sections


def read_cfg(path):
    """Read a cfg file from disk (bytes decoded as UTF-8; invalid bytes are an error)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CfgError(path, 0, f"cannot read: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise CfgError(path, line, f"not a text file (byte 0x{data[e.start]:02x} is not UTF-8)") \
            from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise CfgError(path, line, "not a text file (NUL byte)")
    return parse_cfg_text(text, path)
