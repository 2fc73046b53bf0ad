"""JCS canonicalization must match the reference implementation byte for byte."""

from __future__ import annotations

import functools
import json
import math
import operator

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.canonical import (
    NUMBER_CONVERT,
    NUMBER_NONFINITE,
    NUMBER_SLOW,
    canonical_hash,
    canonicalize,
    canonicalize_tree,
    dumps_ecmascript_number,
    number_flags,
)
from archiver.capture import prepare_workflow
from archiver.errors import InvalidInput
from archiver.sanitize import Sanitizer

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


# ---- the fast path a caller vouches for (``numbers=``): what capture uses ----------------------

tricky_floats = st.sampled_from(
    [1.0, -0.0, 0.5, 4.2, 1e16, 1e21, 1e-6, 1e-7, 2.0**53, 2.0**60, 123456789012345680.0, 5e-324]
)
tricky_ints = st.sampled_from([0, 2**53 - 1, 2**53, 2**53 + 1, -(2**60), 2**63 - 1])
tricky_keys = st.sampled_from(["a", "\ue000", "\U0001f600", "x\ufe0f", "\uffff", 'q"\ue001', "\\"])
tricky_values = st.recursive(
    st.none() | st.booleans() | tricky_ints | tricky_floats | finite_floats | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(tricky_keys | st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=20,
)


def _numbers(value: object) -> int:
    """The OR of number_flags over every number in value: what the sanitizer reports."""
    if isinstance(value, dict):
        return functools.reduce(operator.or_, map(_numbers, value.values()), 0)
    if isinstance(value, list):
        return functools.reduce(operator.or_, map(_numbers, value), 0)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return number_flags(value)
    return 0


@given(tricky_values)
@settings(max_examples=400)
def test_vouched_numbers_give_the_same_bytes_and_tree(value: object) -> None:
    tree = {"v": value}
    expected = rfc8785.dumps(json.loads(json.dumps(tree), parse_int=_js_int))
    data, parsed = canonicalize_tree(tree, numbers=_numbers(tree))
    assert data == canonicalize(tree) == expected
    assert parsed == json.loads(data)


def _js_int(text: str) -> int | float:
    return int(text) if abs(int(text)) < 2**53 else float(text)


def test_number_flags() -> None:
    assert number_flags(3) == number_flags(4.2) == number_flags(2**53) == 0
    assert number_flags(1.0) == number_flags(-0.0) == NUMBER_CONVERT
    assert number_flags(1e21) == number_flags(1e-7) == 0  # orjson prints these as JS does
    assert number_flags(2**53 + 1) == number_flags(1e16) == number_flags(2.0**60) == NUMBER_SLOW
    assert number_flags(True) == NUMBER_SLOW  # not a number to JSON: the exact printer decides
    assert number_flags(math.nan) == number_flags(-math.inf) == NUMBER_NONFINITE


def test_vouched_nonfinite_is_refused() -> None:
    with pytest.raises(InvalidInput, match="NaN"):
        canonicalize_tree({"x": [math.nan]}, numbers=NUMBER_NONFINITE)


def test_keys_needing_utf16_order_are_found_on_the_bytes() -> None:
    # Both kinds of characters present, but only in values: orjson's order is JCS order.
    value = {"b": "\ue000", "a": ["\U0001f600", {"k\\": 'x"\U0001f600\ufe0f'}]}
    assert canonicalize_tree(value, numbers=0)[0] == rfc8785.dumps(value)
    # In keys (also after an escaped quote or backslash): the exact printer sorts them.
    for keys in (
        ("\ue000", "\U0001f600"),
        ('q"\ue000', 'q"\U0001f600'),
        ("\\\uffff", "\\\U00010000"),
    ):
        value = {k: i for i, k in enumerate(keys)} | {"z": "\U0001f600"}
        assert canonicalize_tree(value, numbers=0)[0] == rfc8785.dumps(value)


# ---- capture's structures: the sanitizer and normalize vouch for the numbers -------------------


@given(
    st.lists(tricky_values, min_size=1, max_size=3),
    st.sampled_from([1, 2.5, 1.0, 1e16, 2**60]),
    st.sampled_from([0, 1, 2**53 + 1]),
    st.sampled_from(["hook", 1.0, {"\ue000": 1, "\U0001f600": [2.0]}]),
)
@settings(max_examples=150, deadline=None)
def test_prepared_structures_are_jcs(
    params: list[object], version: object, index: int, webhook: object
) -> None:
    nodes = [
        {
            "id": f"n{i}",
            "name": f"N{i}",
            "type": "n8n-nodes-base.set",
            "typeVersion": version,
            "position": [i, 0.5],
            "webhookId": webhook,
            "parameters": {"p": p},
        }
        for i, p in enumerate(params)
    ]
    connections = {
        "N0": {"main": [[{"node": f"N{len(nodes) - 1}", "type": "main", "index": index}]]}
    }
    workflow = {"nodes": nodes, "connections": connections, "settings": {"s": params[0]}}
    cached = Sanitizer(bytes(range(32)))
    for sanitizer in (cached, cached):  # a new workflow, then one whose nodes the memo knows
        prepared = prepare_workflow(workflow, sanitizer)
        data = prepared.structure_jcs
        assert data == rfc8785.dumps(json.loads(data, parse_int=_js_int))
        assert data == canonicalize(prepared.structure)
        assert prepared.structure == json.loads(data)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_prepare_refuses_nan_naming_the_field_memo_or_not(bad: float) -> None:
    sanitizer = Sanitizer(bytes(range(32)))

    def workflow(value: object, where: str) -> dict[str, object]:
        node = {"name": "A", "type": "t", "parameters": {"x": 1}}
        wf: dict[str, object] = {"nodes": [node], "connections": {}, "settings": {}}
        if where == "settings":
            wf["settings"] = {"x": [value]}
        else:
            node["parameters"] = {"x": [value]}
        return wf

    for where, field in (("node", "nodes[0].parameters.x[0]"), ("settings", "settings.x[0]")):
        for _ in range(2):
            prepare_workflow(workflow(None, where), sanitizer)
            with pytest.raises(InvalidInput, match="NaN") as err:
                prepare_workflow(workflow(bad, where), sanitizer)
            assert err.value.field == field
