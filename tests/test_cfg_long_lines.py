"""A cfg with a 10 MB line (issue 9): messages quote it cut short, never whole."""
import warnings

import pytest

import minidarknet
from minidarknet.errors import CfgError

LONG = "x" * (10 << 20)


@pytest.mark.parametrize("text", [
    f"[net]\ninputs=4\n{LONG}\n",                  # a line with no '='
    f"{LONG}=1\n[net]\ninputs=4\n",                # an option before any section
    f"[net]\ninputs=4\n[{LONG}]\n",                # an unknown section type
    f"[net]\ninputs=4\n[connected]\noutput={LONG}\n",   # not a number
])
def test_errors_quote_long_lines_cut_short(text):
    with pytest.raises(CfgError) as caught:
        minidarknet.loads(text)
    message = str(caught.value)
    assert len(message) < 400 and "\n" not in message, message[:400]


def test_warnings_quote_long_values_cut_short():
    for text in (f"[net]\ninputs=4\nsome_key={LONG}\n[connected]\noutput=2\n",
                 f"[net]\ninputs=4\n[connected]\noutput=2\nsome_key={LONG}\n"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            minidarknet.loads(text)
        messages = [str(w.message) for w in caught]
        assert messages and all(len(m) < 400 for m in messages), [m[:200] for m in messages]
