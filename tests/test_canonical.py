"""JCS canonicalization must match the reference implementation byte for byte."""

from __future__ import annotations

import math

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.canonical import canonical_hash, canonicalize, dumps_ecmascript_number
from archiver.errors import InvalidInput

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | finite_floats
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


@given(json_values)
@settings(max_examples=400)
def test_matches_rfc8785_reference(value: object) -> None:
    assert canonicalize(value) == rfc8785.dumps(value)


@given(finite_floats)
@settings(max_examples=2000)
def test_numbers_format_like_ecmascript(number: float) -> None:
    assert dumps_ecmascript_number(number).encode() == rfc8785.dumps(number)


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1.0, b"1"),
        (-0.0, b"0"),
        (1e16, b"10000000000000000"),
        (1e21, b"1e+21"),
        (1e-6, b"0.000001"),
        (1e-7, b"1e-7"),
        (4.2, b"4.2"),
        (2**60, b"1152921504606847000"),
    ],
)
def test_edge_numbers(number: float, text: bytes) -> None:
    assert canonicalize([number]) == b"[" + text + b"]"


def test_keys_sorted_by_utf16_code_units() -> None:
    value = {"\ue000": 1, "\U0001f600": 2, "a": 3}
    assert canonicalize(value) == rfc8785.dumps(value)
    assert canonicalize(value).index("\U0001f600".encode()) < canonicalize(value).index(
        "\ue000".encode()
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(bad: float) -> None:
    with pytest.raises(InvalidInput):
        canonicalize({"x": [bad]})


def test_lone_surrogates_and_non_string_keys_are_refused() -> None:
    with pytest.raises(InvalidInput):
        canonicalize({"x": "\ud800"})
    with pytest.raises(InvalidInput):
        canonicalize({1: "x"})


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_integers_beyond_2_53_are_canonicalized_as_doubles(number: int) -> None:
    assert (
        canonicalize({"n": number}) == rfc8785.dumps({"n": float(number)})
        if abs(number) > 2**53 - 1
        else rfc8785.dumps({"n": number})
    )


def test_hash_is_sha256_of_jcs() -> None:
    import hashlib

    value = {"b": [1, 2.5, "x"], "a": None}
    assert canonical_hash(value) == hashlib.sha256(rfc8785.dumps(value)).hexdigest()
