"""The fast canonical-JSON encoder must produce exactly RFC 8785's bytes."""

from __future__ import annotations

import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from aivcs_ledgerd.ledger.canonical import canonical_json
from aivcs_ledgerd.ledger.errors import InvalidArgument

EXACT = 2**53 - 1  # integers RFC 8785 writes exactly
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-EXACT, max_value=EXACT)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=1000, deadline=None)
@given(json_values)
def test_matches_reference_encoder(value: Any) -> None:
    assert canonical_json("payload", value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        1.0,
        -0.0,
        2.0**53,
        2.0**60,
        1e21,
        1e-7,
        0.0001,
        1.5e16,
        123.456,
        '\u2028\x00\x1f"\\',
        "\x7f\b\t\n\x0c\r/é\U0001f600",
        {"\U0001f600": 1, "\ufb01": 2},
        {"b": 1, "a": {"d": [True, None], "c": 0.5}, "B": "x"},
        EXACT,
        -EXACT,
        0.00010000000000000002,
        9999999999999998.0 + 0.5,
        {"k": (1, 2)},
    ],
)
def test_edge_cases_match_reference(value: Any) -> None:
    assert canonical_json("payload", value) == rfc8785.dumps(value)


def test_a_lone_surrogate_is_refused_like_the_reference_refuses_it() -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        rfc8785.dumps({"a": "\ud800"})
    with pytest.raises(InvalidArgument, match=r"^payload: has no canonical JSON form"):
        canonical_json("payload", {"a": "\ud800"})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_with_their_path(bad: float) -> None:
    with pytest.raises(InvalidArgument, match=r"^payload\.a\[1\]: numbers must be finite"):
        canonical_json("payload", {"a": [1.0, bad]})


def test_non_finite_number_behind_a_non_ascii_key_is_refused_too() -> None:
    with pytest.raises(InvalidArgument, match="payload"):
        canonical_json("payload", {"é": 1e-9, "b": math.nan})
