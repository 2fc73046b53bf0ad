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

Finding those cases takes a walk over every value (``_scan``), the one per-value Python cost of
this module. A caller that has walked the value anyway (the sanitizer does, and remembers what it
found per node) passes what it found as ``numbers`` (the OR of ``number_flags`` over every number
in the value) and the walk is skipped; keys are then checked on the serialized bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Final

import orjson

from archiver.errors import InvalidInput

__all__ = [
    "NUMBER_CONVERT",
    "NUMBER_NONFINITE",
    "NUMBER_SLOW",
    "canonical_hash",
    "canonicalize",
    "canonicalize_checked",
    "canonicalize_tree",
    "dumps_ecmascript_number",
    "number_flags",
]

_SAFE_INT = 2**53
# What a number needs from ``canonicalize`` (``number_flags``); 0: orjson prints it as JCS does.
NUMBER_CONVERT: Final = 1  # an integral float: printed as an integer
NUMBER_SLOW: Final = 2  # only the exact printer prints it (or something else needs that printer)
NUMBER_NONFINITE: Final = 4  # NaN or an infinity: refused
_CONVERT = NUMBER_CONVERT
_SLOW = NUMBER_SLOW


def canonicalize(value: Any) -> bytes:
    """The JCS bytes of ``value`` (a tree of dict/list/str/int/float/bool/None)."""
    return canonicalize_tree(value)[0]


def canonicalize_tree(value: Any, *, numbers: int | None = None) -> tuple[bytes, Any]:
    """The JCS bytes of ``value`` and the value as those bytes read back (``1.0`` → ``1``).

    ``numbers``, when given, vouches for ``value``: it is made of exactly dict, list, str, int,
    float, bool and None, and ``numbers`` is the OR of ``number_flags`` over all its numbers. The
    walk over every value is then skipped (keys are checked on the serialized bytes instead).
    """
    data, tree, _ = canonicalize_checked(value, numbers=numbers)
    return data, tree


def canonicalize_checked(value: Any, *, numbers: int | None = None) -> tuple[bytes, Any, bool]:
    """``canonicalize_tree``, and whether the tree may be vouched for with ``numbers=0``."""
    if not isinstance(value, dict | list):
        data = _slow(value)  # a lone scalar: the exact printer is cheap enough
        return data, json.loads(data), False
    try:
        out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as err:  # ints beyond 64 bits, non-str keys, unsupported types
        if "Integer exceeds" not in str(err):
            raise InvalidInput(f"value is not JSON: {err}") from err
        out = b""
    except orjson.JSONEncodeError as err:
        raise InvalidInput(f"value is not JSON: {err}") from err
    if numbers is None:
        flags = _scan(value, check_keys=not out or _needs_utf16_sort(out))
    else:
        if numbers & NUMBER_NONFINITE:
            raise InvalidInput("NaN and Infinity are not JSON")
        flags = numbers
        if out and _needs_utf16_sort(out) and _high_keys(out):
            flags |= _SLOW
    if not out or flags & _SLOW:
        data = _slow(value)
        return data, json.loads(data), False  # may hold integers beyond 2^53, 1e+16 ...
    if flags & _CONVERT:
        converted = _convert(value)
        return orjson.dumps(converted, option=orjson.OPT_SORT_KEYS), converted, True
    return out, value, True


def canonical_hash(value: Any) -> str:
    """Hex SHA-256 of the JCS form of ``value``."""
    return hashlib.sha256(canonicalize(value)).hexdigest()


def _needs_utf16_sort(out: bytes) -> bool:
    # U+E000..U+FFFF encode with lead byte 0xEE/0xEF; beyond U+FFFF with 0xF0..0xF4. Only keys
    # holding such characters can sort differently by UTF-16 code units than by code points.
    if b"\xee" not in out and b"\xef" not in out:
        return False
    return any(b in out for b in (b"\xf0", b"\xf1", b"\xf2", b"\xf3", b"\xf4"))


def _high_keys(out: bytes) -> bool:
    """True if an object key in ``out`` (orjson's compact output) holds a character in
    U+E000..U+FFFF: without one, code point order and UTF-16 order agree on every key.

    Their lead bytes (EE, EF) occur only inside strings, and are found at memchr speed; each
    string holding one is followed to its closing quote (a quote after an even number of
    backslashes) and is a key when a colon follows.
    """
    find = out.find
    for lead in (0xEE, 0xEF):
        pos = find(lead)
        while pos >= 0:
            end = find(b'"', pos)
            while end > 0:
                k = end
                while out[k - 1] == 0x5C:  # backslash
                    k -= 1
                if not (end - k) % 2:
                    break
                end = find(b'"', end + 1)
            if end < 0 or out[end + 1 : end + 2] == b":":
                return True
            pos = find(lead, end + 1)
    return False


def number_flags(number: Any) -> int:
    """What ``canonicalize`` needs for one number: 0, NUMBER_CONVERT, NUMBER_SLOW or NONFINITE.

    0 means orjson prints it exactly as JCS does: an int within ±2^53, or a fraction such as
    ``4.2``. Anything but an exact int or float (a subclass, a bool) is NUMBER_SLOW.
    """
    kind = type(number)
    if kind is int:
        return _SLOW if number > _SAFE_INT or number < -_SAFE_INT else 0
    if kind is float and 1e-4 <= abs(number) < 1e16 and not number.is_integer():
        return 0  # the common case: a fraction that repr prints without an exponent (see below)
    if kind is not float:
        return _SLOW
    if not math.isfinite(number):
        return NUMBER_NONFINITE
    if number.is_integer() and abs(number) < _SAFE_INT:
        return _CONVERT
    if (number.is_integer() or "e" in repr(number)) and orjson.dumps(
        number
    ).decode() != dumps_ecmascript_number(number):
        # A fraction without an exponent prints the same digits in repr, orjson and JS.
        return _SLOW
    return 0


def _scan(value: Any, *, check_keys: bool) -> int:
    """One pass over every value: refuse NaN/Infinity, flag what orjson cannot print as JCS."""
    flags = 0
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is dict:
            if check_keys:
                keys = "".join(item)
                if not keys.isascii() and max(keys) >= "\ue000":
                    flags |= _SLOW
            extend(item.values())
        elif kind is list or kind is tuple:
            extend(item)
        elif kind is str or item is None or kind is bool:
            continue
        elif kind is float:
            found = number_flags(item)
            if found & NUMBER_NONFINITE:
                raise InvalidInput("NaN and Infinity are not JSON")
            flags |= found
        elif kind is int:
            if abs(item) > _SAFE_INT:
                flags |= _SLOW
        else:  # subclasses of the JSON types and anything else: the exact printer decides
            flags |= _SLOW
    return flags


def _convert(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {k: _convert(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_convert(v) for v in value]
    if kind is float and value.is_integer() and abs(value) < _SAFE_INT:
        return int(value)
    return value


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
