"""RFC 8785 (JCS) canonical JSON: the one serializer behind hashing and storage.

The fast path is ``orjson`` with sorted keys, whose output equals JCS for every document made of
strings, integers, booleans, null and "ordinary" floats. The cases where it differs are detected on
the output and sent to a slow path that produces JCS exactly:

* floats printed with ``.0`` or an exponent (``1.0`` → ``1``, ``1e+16`` → ``10000000000000000``,
  ``1e-6`` → ``0.000001``, ``-0.0`` → ``0``): JCS prints numbers like ECMAScript does;
* integers beyond ±2^53: JCS numbers are IEEE doubles, so they are canonicalized as the double an
  ECMAScript engine (n8n included) would hold — the same bytes every JCS implementation produces;
* keys with characters at or above U+E000 next to characters beyond U+FFFF: JCS orders keys by
  UTF-16 code units, orjson by code points; only such keys can tell the two apart.

NaN, infinities, non-string keys and lone surrogates are refused with ``InvalidInput``.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import orjson

from archiver.errors import InvalidInput

__all__ = ["canonical_hash", "canonicalize", "dumps_ecmascript_number"]

_SAFE_INT = 2**53
# A float token orjson prints differently from ECMAScript: ends in ".0" or has an exponent.
# A number token orjson may print differently from ECMAScript — "1.0", "-0.0", "1e+16", "1e-6",
# integers of 16+ digits — right after ``:``, ``,`` or ``[`` (compact JSON). Text inside strings that
# merely looks like this only costs the exact check below.
_SUSPECT_NUMBER = re.compile(rb"[:,\[]-?\d(?:\d{15}|[\d.]*(?:e[+-]|\.0(?:[,\]}]|$)))")


def canonicalize(value: Any) -> bytes:
    """The JCS bytes of ``value`` (a tree of dict/list/str/int/float/bool/None)."""
    if not isinstance(value, dict | list):
        return _slow(value)  # a lone scalar: the exact printer is cheap enough
    try:
        out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as err:  # ints beyond 64 bits, non-str keys, unsupported types
        if "Integer exceeds" in str(err):
            return _slow(value)
        raise InvalidInput(f"value is not JSON: {err}") from err
    except orjson.JSONEncodeError as err:
        raise InvalidInput(f"value is not JSON: {err}") from err
    if b"null" in out and _has_non_finite(value):
        raise InvalidInput("NaN and Infinity are not JSON")
    if _SUSPECT_NUMBER.search(out) is None and not _needs_utf16_sort(out):
        return out
    # The bytes look suspicious (often only a string that resembles a number, or an emoji):
    # look at the actual values, fix what orjson can print exactly, fall back where it cannot.
    fixed = _Fixer()
    converted = fixed.walk(value)
    if fixed.slow:
        return _slow(value)
    if not fixed.changed:
        return out
    return orjson.dumps(converted, option=orjson.OPT_SORT_KEYS)


class _Fixer:
    """Integral floats → ints; flags values only the slow path prints exactly."""

    __slots__ = ("changed", "slow")

    def __init__(self) -> None:
        self.changed = False
        self.slow = False

    def walk(self, value: Any) -> Any:
        if isinstance(value, float):
            if value.is_integer() and abs(value) < _SAFE_INT:
                self.changed = True
                return int(value)
            if orjson.dumps(value).decode() != dumps_ecmascript_number(value):
                self.slow = True
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > _SAFE_INT:
                self.slow = True
            return value
        if isinstance(value, dict):
            if any(k and max(k) >= "\ue000" for k in value):
                self.slow = True
            return {k: self.walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.walk(v) for v in value]
        return value


def canonical_hash(value: Any) -> str:
    """Hex SHA-256 of the JCS form of ``value``."""
    return hashlib.sha256(canonicalize(value)).hexdigest()


def _needs_utf16_sort(out: bytes) -> bool:
    # U+E000..U+FFFF encode with lead byte 0xEE/0xEF; beyond U+FFFF with 0xF0..0xF4.
    if b"\xee" not in out and b"\xef" not in out:
        return False
    return any(b in out for b in (b"\xf0", b"\xf1", b"\xf2", b"\xf3", b"\xf4"))


def _has_non_finite(value: Any) -> bool:
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is dict:
            extend(item.values())
        elif kind is list or kind is tuple:
            extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            return True
        elif kind not in _PLAIN and isinstance(item, dict | list | tuple):
            extend(item.values() if isinstance(item, dict) else item)
    return False


_PLAIN = frozenset({str, int, float, bool, type(None)})


def dumps_ecmascript_number(number: float | int) -> str:
    """Format a number as ECMAScript's Number.prototype.toString does (RFC 8785 section 3.2.2.3)."""
    if isinstance(number, bool):
        raise InvalidInput("booleans are not numbers")
    if isinstance(number, int):
        if -_SAFE_INT <= number <= _SAFE_INT:
            return str(number)
        number = float(number)
    if not math.isfinite(number):
        raise InvalidInput("NaN and Infinity are not JSON")
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    digits, exponent = _shortest_digits(abs(number))
    # digits: shortest round-trip decimal digits; value = 0.digits * 10**exponent
    k = len(digits)
    n = exponent
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    exp = f"e+{e}" if e >= 0 else f"e-{-e}"
    if k == 1:
        return sign + digits + exp
    return sign + digits[0] + "." + digits[1:] + exp


def _shortest_digits(x: float) -> tuple[str, int]:
    """Shortest round-trip digits of ``x`` > 0 and n such that x = 0.d1d2... × 10^n."""
    mantissa, _, exp_text = repr(x).partition("e")
    exp = int(exp_text) if exp_text else 0
    int_part, _, frac_part = mantissa.partition(".")
    all_digits = int_part + frac_part
    stripped = all_digits.lstrip("0")
    n = len(int_part) + exp - (len(all_digits) - len(stripped))
    return stripped.rstrip("0") or "0", n


def _slow(value: Any) -> bytes:
    parts: list[str] = []
    _emit(value, parts)
    return "".join(parts).encode("utf-8")


def _emit(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int | float):
        out.append(dumps_ecmascript_number(value))
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise InvalidInput("object keys must be strings")
        out.append("{")
        first = True
        for key in sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass")):
            if not first:
                out.append(",")
            first = False
            out.append(_string(key))
            out.append(":")
            _emit(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _emit(item, out)
        out.append("]")
    else:
        raise InvalidInput(f"value of type {type(value).__name__} is not JSON")


def _string(text: str) -> str:
    try:
        return orjson.dumps(text).decode("utf-8")
    except orjson.JSONEncodeError as err:
        raise InvalidInput("strings must be valid Unicode (no lone surrogates)") from err
