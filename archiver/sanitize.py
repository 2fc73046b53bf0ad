"""The secret sanitizer: no secret value ever reaches storage (architecture invariant 5).

``Sanitizer.sanitize`` takes any JSON tree (a workflow export, a node, pinned data, execution run
data, variables) and returns a *new* tree in which every secret is replaced by a keyed marker::

    <redacted:hmac-sha256:0123456789abcdef0123456789abcdef>

The 32 hex digits are the first 128 bits of HMAC-SHA256(key, secret). Equal secrets give equal
markers under the same key, so a diff can say "secret changed" or "unchanged" without showing
it; without the key, a marker does not help to guess even a short password.

Three rules decide what is a secret (``docs/sanitizing.md`` explains each with examples):

1. **Secret-looking keys.** The value under a key such as ``password``, ``apiKey``,
   ``client_secret``, ``accessToken``, ``Authorization``, ``Cookie`` or ``x-api-key`` is replaced
   (strings of any length, numbers; ``None``, booleans and empty strings stay; containers under
   such a key have every string leaf replaced). Keys are compared case-insensitively with
   ``- _ .`` and spaces removed; see ``is_secret_key``. Structural n8n keys such as
   ``authentication``, ``sendHeaders``, ``maxTokens``, ``tokenType``, ``sessionKey`` are *not*
   secret-looking.
2. **Name/value pairs.** Objects like ``{"name": "Authorization", "value": "Bearer ..."}`` (n8n
   header, query and body parameters, Set-node assignments) have their ``value`` replaced when
   the ``name`` (or ``key``, ``parameterName``, ...) is secret-looking; for pairs, a bare ``key``
   (``?key=...``) counts as secret-looking too.
3. **Secret-looking substrings anywhere in any string**: provider API keys (``sk-``, ``xoxb-``,
   ``ghp_``, ``AKIA``, ``AIza`` ...), JWTs, PEM private keys, ``Bearer``/``Basic`` credentials,
   passwords in URLs, ``password=...``/``"apiKey": "..."`` assignments in code and text, header
   lines such as ``Authorization: ...`` or ``Cookie: ...``, secret webhook URLs. Only the
   secret part is replaced; the rest of the string stays readable.

n8n expressions (``={{ $json.token }}``, ``{{ $credentials.apiKey }}``) reference other data and
are kept; literal secrets inside an expression are still caught. Credential references on nodes
(``credentials: {type: {id, name}}``) are kept; anything else inside a credential reference is
replaced. Markers are never replaced again, so ``sanitize`` is idempotent.

Performance (``benchmarks/sanitize_bench.py``): an unchanged workflow is sanitized at about the
cost of serializing and parsing it, because the sanitized form of the containers one and two
levels below the root (the node list, each node, the connections) is memoised per ``Sanitizer``
by their orjson bytes, and so is the substring scan of each string. Strings not seen before are
scanned in one batch: a prefilter of literal-prefixed patterns over all of them at once picks
the few strings (and, per string, the families of detectors) worth a closer look. The memo
holds only sanitized output, keyed by digests of input bytes, and is bounded by ``cache_bytes``.

Capture uses ``sanitize_nodes`` (a memo entry per workflow node) and ``sanitize_json``: they also
report how the numbers they keep must be printed in JCS (``canonical.number_flags``, memoised with
each entry), so ``canonicalize`` need not walk the tree again, and refuse NaN and infinities.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import math
import re
from collections.abc import Callable, Iterable
from typing import Any, Final

import orjson

from archiver.canonical import NUMBER_CONVERT, NUMBER_NONFINITE, NUMBER_SLOW, number_flags
from archiver.errors import InvalidInput, SanitizationError

__all__ = [
    "MARKER_PREFIX",
    "MARKER_RE",
    "MIN_HMAC_KEY_BYTES",
    "NODE_KEPT_KEYS",
    "Sanitizer",
    "contains_marker",
    "find_markers",
    "is_secret_key",
    "is_secret_pair_name",
]

MARKER_PREFIX: Final = "<redacted:hmac-sha256:"
MARKER_RE: Final = re.compile(r"<redacted:hmac-sha256:[0-9a-f]{32}>")
MIN_HMAC_KEY_BYTES: Final = 16

# Strings shorter than this are not scanned for secret-looking substrings (rule 3): no pattern
# below can match fewer characters. Values under secret-looking keys are replaced at any length.
_MIN_SCAN_LEN: Final = 8
_dumps: Final = orjson.dumps
# The memo's keys: orjson bytes of the input. Types orjson would print but the walk refuses
# (datetimes, dataclasses) or converts first (subclasses) are not memoised.
_MEMO_OPTIONS: Final = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_loads: Final = orjson.loads
_sha256: Final = hashlib.sha256
_DEFAULT_CACHE_BYTES: Final = 64_000_000
_SAFE_INT: Final = 2**53
# Node fields that define identity and wiring: ``sanitize_nodes`` keeps them as they are.
NODE_KEPT_KEYS: Final = frozenset(
    {"id", "name", "type", "typeVersion", "position", "credentials", "disabled", "webhookId"}
)

# --------------------------------------------------------------------------------------------
# Key classification (rules 1 and 2)
# --------------------------------------------------------------------------------------------

_SEPARATORS: Final = str.maketrans("", "", "-_. ")
_BRACKET_RE: Final = re.compile(r"\[([^\[\]]*)\]")

# Normalised keys (lower case, no - _ . or spaces) that are secret-looking as they are ...
_SECRET_EXACT: Final = frozenset(
    {
        "pass",
        "pwd",
        "bearer",
        "cookie",
        "cookies",
        "setcookie",
        "connectionstring",
    }
)
# ... or by their ending: "openaiApiKey", "client_secret", "X-Auth-Token", "db_password", ...
_SECRET_SUFFIXES: Final = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "secrets",
    "token",
    "apikey",
    "apikeys",
    "privatekey",
    "secretkey",
    "accesskey",
    "subscriptionkey",
    "licensekey",
    "encryptionkey",
    "signingkey",
    "masterkey",
    "authorization",
)
# Keys that end like a secret but name something else: pagination cursors, counters.
_NOT_SECRET: Final = frozenset(
    {
        "pagetoken",
        "nextpagetoken",
        "prevpagetoken",
        "previouspagetoken",
        "nexttoken",
        "continuationtoken",
        "synctoken",
        "nextsynctoken",
        "cursortoken",
        "resumetoken",
        "cancellationtoken",
        "canceltoken",
        "quotetoken",
    }
)
_NOT_SECRET_PREFIXES: Final = ("max", "min", "num", "total", "count")
# Names that are secret-looking in a name/value pair or a URL query, but not as object keys
# (n8n uses "key" for Redis keys, sort keys, ...).
_PAIR_ONLY_NAMES: Final = frozenset({"key"})
# "<something>Key" names are secret-looking only when their value looks like a credential
# (16+ characters of letters and digits, no blanks): "openAIKey", "jina_key", "FAL_KEY" hold API
# keys, while "issueKey", "sessionKey", "fileKey", "memoryKey" name other things.
_WEAK_SUFFIXES: Final = ("key", "keys")
_NOT_WEAK: Final = frozenset(
    {
        "key",
        "keys",
        "issuekey",
        "partitionkey",
        "sortkey",
        "primarykey",
        "foreignkey",
        "sessionkey",
        "memorykey",
        "idempotencykey",
        "cachekey",
        "objectkey",
        "filekey",
        "sourcekey",
        "destinationkey",
        "datakey",
        "binarydatakey",
        "binaryimagedatakey",
        "textfieldkey",
        "parentfolderkey",
        "routingkey",
        "messagekey",
        "deduplicationkey",
        "dedupkey",
        "uniquekey",
        "lookupkey",
        "matchkey",
        "groupkey",
        "spacekey",
        "projectkey",
        "boardkey",
        "rowkey",
        "publickey",
        "publishablekey",
        "sitekey",
        "responsekey",
        "outputkey",
        "inputkey",
        "propertykey",
        "fieldkey",
        "jsonkey",
        "mapkey",
        "hotkey",
        "resourcekey",
        "shortcutkey",
    }
)
_KEYLIKE_RE: Final = re.compile(r"[A-Za-z0-9_\-+=:]{16,512}")

_PAIR_NAME_FIELDS: Final = ("name", "key", "parameterName", "headerName", "fieldName", "keyName")
_PAIR_VALUE_FIELDS: Final = frozenset(
    {"value", "parameterValue", "headerValue", "fieldValue", "keyValue"}
)
# Objects keyed by node *names* (which are labels, never secret-looking keys).
_NAME_MAPS: Final = frozenset(
    {"connections", "pinData", "runData", "waitingExecution", "waitingExecutionSource"}
)

# Key codes kept in the per-sanitizer key cache.
_PLAIN: Final = 0
_SECRET: Final = 1
_CREDENTIALS: Final = 2
_NAME_MAP: Final = 3
_PAIR_VALUE: Final = 4
_WEAK: Final = 5


def _normalize_key(key: str) -> str:
    k = key.strip().lower()
    if k.endswith("]") and "[" in k:
        # Form-encoded keys: "auth[access_token]", "data[BOT][302][AUTH][refresh_token]".
        segments = [seg for seg in _BRACKET_RE.findall(k) if seg.strip()]
        if segments:
            k = segments[-1]
    return k.translate(_SEPARATORS)


def _is_secret_normalized(n: str, extra: frozenset[str]) -> bool:
    if not n:
        return False
    if n in extra or n in _SECRET_EXACT:
        return True
    if n in _NOT_SECRET or n.startswith(_NOT_SECRET_PREFIXES):
        return False
    return n.endswith(_SECRET_SUFFIXES)


def _is_weak_normalized(n: str) -> bool:
    return (
        n.endswith(_WEAK_SUFFIXES) and n not in _NOT_WEAK and not n.startswith(_NOT_SECRET_PREFIXES)
    )


def _looks_like_key_value(value: str) -> bool:
    """A value that looks like an API key: long, no blanks, letters and digits."""
    return (
        _KEYLIKE_RE.fullmatch(value) is not None
        and not _DIGITS.isdisjoint(value)
        and not _PLACEHOLDER_RE.fullmatch(value)
        and value.lower() != value.upper()
    )


def is_secret_key(key: str, extra_secret_keys: Iterable[str] = ()) -> bool:
    """True if the value under this object key is treated as a secret (rule 1)."""
    extra = frozenset(_normalize_key(k) for k in extra_secret_keys)
    return _is_secret_normalized(_normalize_key(key), extra)


def is_secret_pair_name(name: str, extra_secret_keys: Iterable[str] = ()) -> bool:
    """True if the value of a name/value pair with this name is treated as a secret (rule 2)."""
    n = _normalize_key(name)
    extra = frozenset(_normalize_key(k) for k in extra_secret_keys)
    return n in _PAIR_ONLY_NAMES or _is_secret_normalized(n, extra)


# --------------------------------------------------------------------------------------------
# Substring detection (rule 3)
# --------------------------------------------------------------------------------------------

_TOKEN_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ID_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_ALNUM: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_DIGITS: Final = frozenset("0123456789")
_WORD_SEPARATORS: Final = frozenset("-_. ")

# Provider tokens with a recognisable prefix: (prefilter literals in lower case, pattern, whether
# the token must not follow a letter or digit). Only prefixes common inside words ("task-...",
# "monkey-...") need that boundary; the others are found even when glued to other text.
_PREFIX_TOKENS: Final[tuple[tuple[tuple[str, ...], re.Pattern[str], bool], ...]] = (
    (
        ("sk-",),
        re.compile(r"sk-(?:proj|ant|or-v1|svcacct|admin)-[A-Za-z0-9_-]{20,}"),
        False,
    ),
    (("sk-",), re.compile(r"sk-[A-Za-z0-9_-]{20,}"), True),
    (("sk_", "rk_"), re.compile(r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"), False),
    (("whsec_",), re.compile(r"whsec_[A-Za-z0-9+/=]{20,}"), False),
    (("xox",), re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}"), False),
    (("xapp-",), re.compile(r"xapp-\d-[A-Za-z0-9-]{10,}"), False),
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}"), False),
    (("github_pat_",), re.compile(r"github_pat_[A-Za-z0-9_]{40,}"), False),
    (("glpat-",), re.compile(r"glpat-[A-Za-z0-9_-]{20,}"), False),
    (("akia", "asia"), re.compile(r"(?:AKIA|ASIA)[0-9A-Z]{16}"), False),
    (("aiza",), re.compile(r"AIza[0-9A-Za-z_-]{35}"), False),
    (("hf_",), re.compile(r"hf_[A-Za-z0-9]{30,}"), False),
    (("sg.",), re.compile(r"SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"), False),
    (
        ("shpat_", "shpss_", "shpca_", "shppa_"),
        re.compile(r"shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}"),
        False,
    ),
    (("npm_",), re.compile(r"npm_[A-Za-z0-9]{36}"), False),
    (("pypi-",), re.compile(r"pypi-AgE[A-Za-z0-9_-]{50,}"), False),
    (("xkeysib-",), re.compile(r"xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}"), False),
    (("key-",), re.compile(r"key-[0-9a-f]{32}"), True),
    (("n8n_api_",), re.compile(r"n8n_api_[A-Za-z0-9]{20,}"), False),
    # Telegram bot tokens: "<bot id>:<35 characters starting with AA>", also in ".../bot<token>/".
    ((":aa",), re.compile(r"[0-9]{8,10}:AA[A-Za-z0-9_-]{30,}"), False),
)
_JWT_RE: Final = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_PEM_BEGIN_RE: Final = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----")
_PEM_BODY_RE: Final = re.compile(r"(?:[A-Za-z0-9+/=\s:-]|\\[nr])*")
_B64_RUN_RE: Final = re.compile(r"[A-Za-z0-9+/]{16,}")
# URLs whose path is itself the credential: (prefilter literal, pattern with the secret in group 1).
_SECRET_URLS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    (
        "hooks.slack.com",
        re.compile(r"hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9/_-]{16,})"),
    ),
    ("/api/webhooks/", re.compile(r"/api/webhooks/([0-9]{6,}/[A-Za-z0-9_-]{16,})")),
    ("make.com", re.compile(r"hook\.(?:[a-z0-9]+\.)?make\.com/([A-Za-z0-9_-]{16,})")),
    ("integromat.com", re.compile(r"hook\.(?:[a-z0-9]+\.)?integromat\.com/([A-Za-z0-9_-]{16,})")),
    (
        "ipqualityscore.com",
        re.compile(r"ipqualityscore\.com/api/(?:json|xml)/[a-z]+/([A-Za-z0-9]{16,})"),
    ),
)
_URL_USERINFO_RE: Final = re.compile(r"://([^\s/:@\"'<>{}`]*):([^\s/@\"'<>`]+)@")
_BEARER_TOKEN_RE: Final = re.compile(r"[ \t]+([A-Za-z0-9._~+/-]+=*)")
_SCHEME_RE: Final = re.compile(
    r"(?i)(bearer|basic|token|bot|digest|negotiate|apikey|api-key|key)([ \t]+)(\S+)"
)
_SCHEME_WORDS: Final = frozenset(
    {"bearer", "basic", "token", "bot", "digest", "negotiate", "apikey", "api-key", "key"}
)
_TEMPLATE_RE: Final = re.compile(r"(\{\{.*?\}\})", re.DOTALL)

# Keywords that can end the key of a "key = value" / "key: value" assignment in a string.
_KV_KEYWORDS: Final = ("pass", "pwd", "secret", "token", "key", "authorization", "cookie", "bearer")
_MAX_ASSIGNED_VALUE: Final = 4096
_HEADER_KEYS: Final = frozenset({"authorization", "proxyauthorization", "cookie", "setcookie"})
_UNQUOTED_END: Final = frozenset(" \t\r\n\"'`,;&)}]<>\\|")
_LINE_END: Final = frozenset("\r\n\"'`\\")
_IDENTIFIER_RE: Final = re.compile(
    r"[A-Za-z_$][A-Za-z_$]*(?:(?:\.|\?\.)[A-Za-z_$][\w$]*|\[[^\]]*\]|\([^)]*\)?)*"
)
_PLACEHOLDER_RE: Final = re.compile(
    r"""(?ix)
    (?:your|my|insert|enter|replace|put|add|paste)(?:[\s_-].*)?   # YOUR_API_KEY, your-token-here
    | .*(?:_here|-here|\shere)                                     # KEY_HERE
    | (?-i:[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)                          # API_KEY (a variable name)
    | x{3,}.* | \*+ | \.{2,}.* | -+ | _+ | \#+ | 0+ | \?+          # masks, ellipses
    | <[^<>]*> | \[[^\[\]]*\] | \{[^{}]*\} | %s | \$\w+              # <token>, [KEY], {key}
    | undefined | null | none | nil | true | false | string | changeit
    | password | passwd | pass | pwd | secret | token | apikey | api[_-]key | key | value
    | example | sample | redacted | hidden | dummy | placeholder | test | demo
    """
)

# Prefilter: patterns searched in the ASCII-lower-cased UTF-8 bytes of all strings at once. A
# string is handed to a family of detailed detectors only if one of that family's patterns occurs
# in it. Every pattern has a literal prefix (fast in ``re``) and is implied by its detectors.
_PEM: Final = 1
_JWT: Final = 2
_PREFIX: Final = 4
_URL: Final = 8
_SCHEME: Final = 16
_USERINFO: Final = 32
_KV: Final = 64
_PREFILTER: Final[tuple[tuple[int, re.Pattern[bytes]], ...]] = (
    (_PEM, re.compile(rb"private key")),
    (_JWT, re.compile(rb"eyj[a-z0-9_\-]{8,}\.eyj")),
    (_PREFIX, re.compile(rb"sk-")),
    (_PREFIX, re.compile(rb"k_(?:live|test)_")),
    (_PREFIX, re.compile(rb"whsec_")),
    (_PREFIX, re.compile(rb"x(?:ox[abposr]-|app-[0-9]-|keysib-)")),
    (_PREFIX, re.compile(rb"gh[pousr]_")),
    (_PREFIX, re.compile(rb"github_pat_")),
    (_PREFIX, re.compile(rb"glpat-")),
    (_PREFIX, re.compile(rb"akia[0-9a-z]{16}")),
    (_PREFIX, re.compile(rb"asia[0-9a-z]{16}")),
    (_PREFIX, re.compile(rb"aiza[0-9a-z_\-]{35}")),
    (_PREFIX, re.compile(rb"hf_[a-z0-9]{30}")),
    (_PREFIX, re.compile(rb"sg\.[a-z0-9_\-]{16}")),
    (_PREFIX, re.compile(rb"shp(?:at|ss|ca|pa)_")),
    (_PREFIX, re.compile(rb"npm_[a-z0-9]{36}")),
    (_PREFIX, re.compile(rb"pypi-age")),
    (_PREFIX, re.compile(rb"key-[0-9a-f]{32}")),
    (_PREFIX, re.compile(rb"n8n_api_")),
    (_PREFIX, re.compile(rb":aa[a-z0-9_\-]{30}")),
    (_URL, re.compile(rb"hook(?:s\.slack\.com/|\.)")),
    (_URL, re.compile(rb"/api/webhooks/[0-9]")),
    (_URL, re.compile(rb"ipqualityscore\.com/api/")),
    (_SCHEME, re.compile(rb"bearer[ \t]+[a-z0-9._~+/\-]")),
    (_SCHEME, re.compile(rb"basic[ \t]+[a-z0-9+/]")),
    (_USERINFO, re.compile(rb"://[^\s/:@\"'<>{}`\x00]*:[^\s/@\"'<>`\x00]+@")),
    *(
        (_KV, re.compile(kw.encode() + rb"[a-z0-9_.\-]*[\"'\\\]]{0,3}[ \t]*(?:[:=]|[\"'])"))
        for kw in _KV_KEYWORDS
    ),
)


def _group_prefilter() -> tuple[
    tuple[re.Pattern[bytes], tuple[tuple[int, re.Pattern[bytes]], ...], int], ...
]:
    """``_PREFILTER`` as one alternation per first byte: (pattern, its branches, their families).

    Each pattern costs a pass over the text; ``re`` searches an alternation whose branches share
    their first byte about as fast as one of them (it finds the common prefix), so grouping halves
    the passes. Which branches matched is asked only where the group matched.
    """
    by_first: dict[bytes, list[tuple[int, re.Pattern[bytes]]]] = {}
    for family, pattern in _PREFILTER:
        by_first.setdefault(pattern.pattern[:1], []).append((family, pattern))
    groups = []
    for branches in by_first.values():
        union = re.compile(b"|".join(b"(?:" + p.pattern + b")" for _, p in branches))
        mask = 0
        for family, _ in branches:
            mask |= family
        groups.append((union, tuple(branches), mask))
    return tuple(groups)


_PREFILTER_GROUPS: Final = _group_prefilter()
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _looks_random(token: str) -> bool:
    """A credential-looking token: long enough, not a word, not a placeholder."""
    if len(token) < 8 or _PLACEHOLDER_RE.fullmatch(token):
        return False
    if not _DIGITS.isdisjoint(token):
        return True
    if token.lower() != token and token.upper() != token:
        return True  # mixed case
    # Long lower-case runs are random only without word separators ("sk-learn-is-a-library").
    return len(token) >= 24 and _WORD_SEPARATORS.isdisjoint(token)


def _is_basic_credential(token: str) -> bool:
    if len(token) < 8 or len(token) % 4:
        return False
    try:
        decoded = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def _has_alnum(text: str) -> bool:
    return not _ALNUM.isdisjoint(text)


def _is_masked(text: str) -> bool:
    return bool(text) and not text.strip("*•·●")


# --------------------------------------------------------------------------------------------
# The sanitizer
# --------------------------------------------------------------------------------------------

_Patch = tuple[Any, Any, str]


class _Call:
    """State of one ``sanitize`` call: strings to scan in one batch, chunks to memoise, and the
    OR of ``canonical.number_flags`` over the numbers the result keeps (``flags``)."""

    __slots__ = ("chunks", "flags", "pending")

    def __init__(self) -> None:
        self.pending: list[_Patch] = []
        self.chunks: list[tuple[int, bytes, Any, Any, int]] = []
        self.flags = 0


# A chunk is a container one or two levels below the root (a workflow's node list, one node, its
# connections): its sanitized form is memoised by its orjson bytes, so an unchanged workflow is
# sanitized at the cost of serializing and parsing it. Modes: how the chunk is walked. With the
# sanitized bytes the memo keeps the chunk's number flags, so a hit needs no walk at all.
_MODE_PLAIN: Final = 0
_MODE_NAME_MAP: Final = 1
_MODE_NODE: Final = 2  # a workflow node; NODE_KEPT_KEYS kept as they are
_UNCHANGED: Final = b""
_NOT_MEMO: Final = 8  # with the number flags: a chunk not to memoise
_HAS_NULL: Final = 16  # in the memo: the chunk's bytes hold a null (see ``_twin_ok``)
# Where a memoised chunk holds its nulls (keys and indexes from the chunk down), None if more
# than _MAX_NULL_PATHS; noted on the chunk's first hit.
_NullPaths = tuple[tuple[str | int, ...], ...] | None
_MAX_NULL_PATHS: Final = 64
_UNKNOWN: Final[Any] = object()
_HIT_ONCE: Final[Any] = object()
_FLAGS: Final = NUMBER_CONVERT | NUMBER_SLOW | NUMBER_NONFINITE  # what callers get
# digest → (sanitized bytes, flags). Bytes, not parsed trees: a memo of trees would be traversed
# by every full garbage collection (milliseconds for a warm memo).
_Memo = dict[bytes, tuple[bytes, int]]


class Sanitizer:
    """Replaces secrets in JSON trees by keyed HMAC markers. Thread-safe; reuse one instance.

    ``cache_bytes`` bounds the memo of sanitized strings and chunks (0 disables it); the memo
    only ever holds sanitized output and input that is about to be stored sanitized.
    """

    def __init__(
        self,
        hmac_key: bytes,
        *,
        extra_secret_keys: Iterable[str] = (),
        cache_bytes: int = _DEFAULT_CACHE_BYTES,
    ) -> None:
        if not isinstance(hmac_key, bytes | bytearray) or len(hmac_key) < MIN_HMAC_KEY_BYTES:
            raise InvalidInput(
                f"the HMAC key must be at least {MIN_HMAC_KEY_BYTES} bytes", field="hmacKey"
            )
        self._hmac = hmac.new(bytes(hmac_key), digestmod=hashlib.sha256)
        self._extra = frozenset(_normalize_key(k) for k in extra_secret_keys)
        self._keys: dict[str, int] = {}
        self._names: dict[str, int] = {}
        self._memo: dict[str, str] = {}
        self._chunks: tuple[_Memo, _Memo, _Memo] = ({}, {}, {})
        self._nulls: dict[bytes, _NullPaths] = {}  # by the chunk's digest: see _twin_ok
        self._cache_limit = max(0, cache_bytes)
        self._memo_size = 0
        self._chunk_size = 0

    # ---- public API ------------------------------------------------------------------------

    def marker(self, secret: str) -> str:
        """The marker that replaces ``secret``: equal secrets give equal markers."""
        mac = self._hmac.copy()
        mac.update(secret.encode("utf-8", "surrogatepass"))
        return f"{MARKER_PREFIX}{mac.hexdigest()[:32]}>"

    def sanitize(self, value: Any) -> Any:
        """Return a new JSON tree with every secret replaced; ``value`` is not changed."""
        return self._sanitize(value)[0]

    def sanitize_json(self, value: Any, *, where: str = "") -> tuple[Any, int]:
        """``sanitize``, plus what ``canonicalize_tree(..., numbers=)`` needs to skip its walk.

        Returns the sanitized tree (made of exactly dict, list, str, int, float, bool and None)
        and the OR of ``canonical.number_flags`` over its numbers. NaN and infinities the result
        would keep are refused: InvalidInput naming the first one's path (after ``where``).
        """
        out, flags = self._sanitize(value)
        if flags & NUMBER_NONFINITE:
            raise _nonfinite(out, where)
        return out, flags

    def sanitize_nodes(self, nodes: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """Sanitize workflow nodes, keeping ``NODE_KEPT_KEYS`` (identity and wiring) as they are.

        Like ``sanitize_json`` (numbers checked, paths ``nodes[i]...``). Each node's result is
        memoised by the node's bytes, so a node seen before costs a serialization, a hash and a
        parse (of the fields but NODE_KEPT_KEYS: those are shared with ``nodes``). A node not seen
        before is walked whole (its containers are not memoised one by one); one that sanitizing
        left unchanged is stored as such, and its fields are serialized on its first hit.
        """
        call = _Call()
        out: list[dict[str, Any]] = []
        append = out.append
        memo = self._chunks[_MODE_NODE]
        flags = 0
        try:
            for node in nodes:
                # The memo hit, inline: the common case for a workflow seen before, edits and all.
                if type(node) is dict and self._cache_limit:
                    try:
                        raw = _dumps(node, option=_MEMO_OPTIONS)
                    except TypeError:
                        append(self._node(node, call, None, b""))
                        continue
                    digest = _sha256(raw).digest()
                    hit = memo.get(digest)
                    # orjson prints NaN as null: a node holding one has the bytes of a null twin.
                    if hit is not None and (
                        not hit[1] & _HAS_NULL or self._twin_ok(digest, raw, node)
                    ):
                        result = hit[0]
                        if not result:  # first hit of a node sanitizing left unchanged
                            result = self._unchanged_node(memo, digest, node, hit[1])
                        done = dict(node)
                        done.update(_loads(result))
                        flags |= hit[1]
                        append(done)
                    else:
                        append(self._node(node, call, raw, digest))
                else:
                    append(self._node(node, call, None, b""))
        except _NotPlain:
            return self.sanitize_nodes(_to_plain(nodes))
        except RecursionError as err:
            raise SanitizationError("value is nested too deeply to be sanitized") from err
        self._finish(call)
        flags |= call.flags
        if flags & NUMBER_NONFINITE:
            raise _nonfinite(out, "nodes")
        return out, flags & _FLAGS

    def _sanitize(self, value: Any) -> tuple[Any, int]:
        call = _Call()
        t = type(value)
        out: Any
        try:
            if t is dict:
                out = self._walk_dict(value, call, self._chunk1)
            elif t is list or t is tuple:
                out = self._walk_list(value, call, self._chunk1)
            else:
                out = self._walk_list([value], call, None)  # patched below: unwrap afterwards
        except _NotPlain:
            return self._sanitize(_to_plain(value))  # subclasses of dict, str, int...: rare
        except RecursionError as err:
            raise SanitizationError("value is nested too deeply to be sanitized") from err
        self._finish(call)
        return (out if t is dict or t is list or t is tuple else out[0]), call.flags & _FLAGS

    def _finish(self, call: _Call) -> None:
        if call.pending:
            self._resolve(call.pending)
        if call.chunks:
            self._store_chunks(call.chunks)

    def sanitize_text(self, text: str) -> str:
        """Rule 3 alone: replace the secret-looking substrings of one string."""
        return self._scan_one(text)

    def redact_value(self, value: Any) -> Any:
        """Rule 1 alone: the replacement for ``value`` as if it stood under a secret key."""
        try:
            return self._secret_value(value, _Call(), secret_numbers=True)
        except _NotPlain:
            return self._secret_value(_to_plain(value), _Call(), secret_numbers=True)
        except RecursionError as err:
            raise SanitizationError("value is nested too deeply to be sanitized") from err

    def is_secret_key(self, key: str) -> bool:
        """Rule 1's key test, including this sanitizer's ``extra_secret_keys``."""
        return self._key_code(key) == _SECRET

    def clear_cache(self) -> None:
        """Forget memoised results (they are rebuilt on demand)."""
        self._memo = {}
        self._chunks = ({}, {}, {})
        self._nulls = {}
        self._memo_size = 0
        self._chunk_size = 0

    # ---- the walk --------------------------------------------------------------------------

    def _key_code(self, key: str) -> int:
        code = self._keys.get(key)
        if code is None:
            if key in _NAME_MAPS:
                code = _NAME_MAP
            elif key == "credentials":
                code = _CREDENTIALS
            elif key in _PAIR_VALUE_FIELDS:
                code = _PAIR_VALUE
            else:
                n = _normalize_key(key)
                if _is_secret_normalized(n, self._extra):
                    code = _SECRET
                elif _is_weak_normalized(n):
                    code = _WEAK
                else:
                    code = _PLAIN
            if len(self._keys) < 65536:
                self._keys[key] = code
        return code

    def _name_code(self, name: str) -> int:
        """_SECRET, _WEAK or _PLAIN for the name of a name/value pair."""
        found = self._names.get(name)
        if found is None:
            n = _normalize_key(name)
            if n in _PAIR_ONLY_NAMES or _is_secret_normalized(n, self._extra):
                found = _SECRET
            elif _is_weak_normalized(n):
                found = _WEAK
            else:
                found = _PLAIN
            if len(self._names) < 65536:
                self._names[name] = found
        return found

    def _walk_dict(self, d: dict[Any, Any], call: _Call, sub: _Sub | None) -> dict[str, Any]:
        out = dict(d)
        keys = self._keys
        memo = self._memo
        for k, v in d.items():
            code = keys.get(k)
            if code is None:
                if type(k) is not str:
                    raise _not_json(k, key=True)
                code = self._key_code(k)
            t = type(v)
            if code:
                if code == _SECRET:
                    out[k] = self._secret_value(v, call, secret_numbers=True)
                    continue
                if code == _PAIR_VALUE:
                    code = self._pair_code(d)
                if code == _WEAK:
                    if t is str and _looks_like_key_value(v):
                        out[k] = self._redact_string(v)
                        continue
                elif code == _PAIR_VALUE:
                    out[k] = self._secret_value(v, call, secret_numbers=True)
                    continue
                elif t is dict:
                    if code == _NAME_MAP:
                        out[k] = (
                            sub(v, call, _MODE_NAME_MAP)
                            if sub is not None
                            else self._walk_name_map(v, call, None)
                        )
                        continue
                    if (
                        code == _CREDENTIALS
                        and "type" in d
                        and ("parameters" in d or "typeVersion" in d)
                    ):
                        out[k] = self._walk_credentials(v, call)
                        continue
            if t is str:
                if len(v) >= _MIN_SCAN_LEN and v not in memo:
                    call.pending.append((out, k, v))
            elif t is dict:
                out[k] = (
                    sub(v, call, _MODE_PLAIN) if sub is not None else self._walk_dict(v, call, None)
                )
            elif t is list or t is tuple:
                out[k] = (
                    sub(v, call, _MODE_PLAIN) if sub is not None else self._walk_list(v, call, None)
                )
            elif t is int:
                if v > _SAFE_INT or v < -_SAFE_INT:
                    call.flags |= NUMBER_SLOW
            elif t is float:
                call.flags |= number_flags(v)
            elif not (v is None or t is bool):
                raise _not_json(v)
        return out

    def _walk_list(
        self, items: list[Any] | tuple[Any, ...], call: _Call, sub: _Sub | None
    ) -> list[Any]:
        out = list(items)
        memo = self._memo
        for i, v in enumerate(items):
            t = type(v)
            if t is str:
                if len(v) >= _MIN_SCAN_LEN and v not in memo:
                    call.pending.append((out, i, v))
            elif t is dict:
                out[i] = (
                    sub(v, call, _MODE_PLAIN) if sub is not None else self._walk_dict(v, call, None)
                )
            elif t is list or t is tuple:
                out[i] = (
                    sub(v, call, _MODE_PLAIN) if sub is not None else self._walk_list(v, call, None)
                )
            elif t is int:
                if v > _SAFE_INT or v < -_SAFE_INT:
                    call.flags |= NUMBER_SLOW
            elif t is float:
                call.flags |= number_flags(v)
            elif not (v is None or t is bool):
                raise _not_json(v)
        return out

    def _walk_name_map(self, d: dict[Any, Any], call: _Call, sub: _Sub | None) -> dict[str, Any]:
        """An object keyed by node names (connections, pinData, runData): names are labels."""
        out = dict(d)
        memo = self._memo
        for k, v in d.items():
            if type(k) is not str:
                raise _not_json(k, key=True)
            t = type(v)
            if t is str:
                if len(v) >= _MIN_SCAN_LEN and v not in memo:
                    call.pending.append((out, k, v))
            elif t is dict:
                out[k] = (
                    sub(v, call, _MODE_PLAIN) if sub is not None else self._walk_dict(v, call, None)
                )
            elif t is list or t is tuple:
                out[k] = (
                    sub(v, call, _MODE_PLAIN) if sub is not None else self._walk_list(v, call, None)
                )
            elif t is int:
                if v > _SAFE_INT or v < -_SAFE_INT:
                    call.flags |= NUMBER_SLOW
            elif t is float:
                call.flags |= number_flags(v)
            elif not (v is None or t is bool):
                raise _not_json(v)
        return out

    def _chunk(self, v: Any, call: _Call, mode: int, sub: _Sub | None) -> Any:
        memo = self._chunks[mode]
        raw = None
        if self._cache_limit:
            try:
                raw = _dumps(v, option=_MEMO_OPTIONS)
            except TypeError:  # not JSON (or an integer beyond 64 bits): the walk decides
                raw = None
        if raw is not None:
            digest = _sha256(raw).digest()
            hit = memo.get(digest)
            if hit is not None:
                found = self._hit(hit, digest, raw, v)
                if found is not None:
                    call.flags |= hit[1]
                    return found
        saved = call.flags
        call.flags = 0
        if mode == _MODE_NAME_MAP:
            out: Any = self._walk_name_map(v, call, None)
        elif type(v) is dict:
            out = self._walk_dict(v, call, sub)
        else:
            out = self._walk_list(v, call, sub)
        flags = call.flags
        call.flags = saved | flags
        if raw is not None:
            call.chunks.append((mode, digest, v, out, flags | _has_null(raw)))
        return out

    def _node(self, node: Any, call: _Call, raw: bytes | None, digest: bytes) -> dict[str, Any]:
        """One workflow node not found in the memo (``raw``: its bytes, None if not memoisable):
        NODE_KEPT_KEYS kept (shared) and classified, the rest walked like the fields of any
        object (``_walk_dict``, inline: one copy of the node). The memo keeps the sanitized rest
        by the whole node's digest (``_store_chunks``)."""
        if type(node) is not dict:
            if isinstance(node, dict):
                raise _NotPlain()
            raise SanitizationError(f"a node must be an object, not {type(node).__name__}")
        saved = call.flags
        call.flags = 0
        kept = NODE_KEPT_KEYS
        keys = self._keys
        memo = self._memo
        pending = call.pending
        found = 0
        out = dict(node)
        for k, v in node.items():
            t = type(v)
            if k in kept:
                if t is str or t is bool or v is None:
                    continue
                if t is int:
                    if -_SAFE_INT <= v <= _SAFE_INT:
                        continue
                elif t is list and len(v) == 2:  # a position: two numbers, usually small ints
                    x, y = v
                    if (
                        type(x) is int
                        and type(y) is int
                        and -_SAFE_INT <= x <= _SAFE_INT
                        and -_SAFE_INT <= y <= _SAFE_INT
                    ):
                        continue
                found |= _kept_flags(v)
                continue
            code = keys.get(k)
            if code is None:
                if type(k) is not str:
                    raise _not_json(k, key=True)
                code = self._key_code(k)
            if code and self._node_field(node, k, v, code, out, call):
                continue
            if t is str:
                if len(v) >= _MIN_SCAN_LEN and v not in memo:
                    pending.append((out, k, v))
            elif t is dict:
                out[k] = self._walk_dict(v, call, None)
            elif t is list or t is tuple:
                out[k] = self._walk_list(v, call, None)
            elif t is int:
                if v > _SAFE_INT or v < -_SAFE_INT:
                    call.flags |= NUMBER_SLOW
            elif t is float:
                call.flags |= number_flags(v)
            elif not (v is None or t is bool):
                raise _not_json(v)
        flags = call.flags | found
        call.flags = saved | flags
        if raw is not None:
            call.chunks.append((_MODE_NODE, digest, node, out, flags | _has_null(raw)))
        return out

    def _node_field(
        self, node: dict[str, Any], k: str, v: Any, code: int, out: dict[str, Any], call: _Call
    ) -> bool:
        """``_walk_dict``'s handling of a key with a code, for a node field that is not in
        NODE_KEPT_KEYS: True if done, False if ``v`` is to be walked as under a plain key."""
        if code == _SECRET:
            out[k] = self._secret_value(v, call, secret_numbers=True)
            return True
        if code == _PAIR_VALUE:  # the pair's name fields are looked up among the walked fields
            code = self._pair_code({f: x for f, x in node.items() if f not in NODE_KEPT_KEYS})
        if code == _WEAK:
            if type(v) is str and _looks_like_key_value(v):
                out[k] = self._redact_string(v)
                return True
        elif code == _PAIR_VALUE:
            out[k] = self._secret_value(v, call, secret_numbers=True)
            return True
        elif code == _NAME_MAP and type(v) is dict:
            out[k] = self._walk_name_map(v, call, None)
            return True
        # _CREDENTIALS: "credentials" is in NODE_KEPT_KEYS
        return False

    def _chunk1(self, v: Any, call: _Call, mode: int) -> Any:
        return self._chunk(v, call, mode, self._chunk2)

    def _chunk2(self, v: Any, call: _Call, mode: int) -> Any:
        return self._chunk(v, call, mode, None)

    def _store_chunks(self, chunks: list[tuple[int, bytes, Any, Any, int]]) -> None:
        kept = NODE_KEPT_KEYS
        for mode, digest, before, out, flags in chunks:
            if flags & (NUMBER_NONFINITE | _NOT_MEMO):
                continue  # NaN prints as null: a hit would turn it into null
            if out == before:  # a node: its fields but NODE_KEPT_KEYS on its first hit
                result = _UNCHANGED
            else:
                if mode == _MODE_NODE:  # the sanitized fields but NODE_KEPT_KEYS
                    out = {k: v for k, v in out.items() if k not in kept}
                try:
                    result = _dumps(out)
                except TypeError:
                    continue
            size = 100 + len(result)
            if self._chunk_size + size > self._cache_limit:
                if size > self._cache_limit // 4:
                    continue
                self._chunks = ({}, {}, {})
                self._nulls = {}
                self._chunk_size = 0
            self._chunks[mode][digest] = (result, flags)
            self._chunk_size += size

    def _hit(self, hit: tuple[bytes, int], digest: bytes, raw: bytes, before: Any) -> Any:
        """The memoised result of a chunk whose bytes are ``raw``, or None to walk it after all
        (``before`` is a twin of the memoised chunk: see ``_twin_ok``)."""
        if hit[1] & _HAS_NULL and not self._twin_ok(digest, raw, before):
            return None
        return _loads(hit[0] or raw)

    def _twin_ok(self, digest: bytes, raw: bytes, before: Any) -> bool:
        """Whether ``before``, whose bytes ``raw`` hold a null, is the chunk the memo holds.

        orjson prints NaN and infinities as null, so a chunk holding one has the bytes of its twin
        with null there; every other value prints distinctly. So ``before`` is the memoised chunk
        exactly when it holds None wherever the bytes hold a null. The chunk's first two hits parse
        the bytes and compare them with ``before``; the second also notes where the nulls are
        (a walk, ~0.3 × the parse), and later hits look only there: a few lookups instead of a
        parse and a deep compare of the whole chunk (which had taken a warm ``sanitize`` of a
        200 KB workflow from 0.8 to 1.4 ms). A chunk with more than ``_MAX_NULL_PATHS`` nulls
        is compared whole on every hit.
        """
        paths = self._nulls.get(digest, _UNKNOWN)
        if paths is _UNKNOWN:  # a chunk seen twice pays no more than the compare
            self._nulls[digest] = _HIT_ONCE
            return bool(_loads(raw) == before)
        if paths is _HIT_ONCE or paths is None:
            parsed = _loads(raw)
            if paths is _HIT_ONCE:
                paths = _null_paths(parsed, sum(raw.count(token) for token in _NULL_TOKENS))
                self._nulls[digest] = paths
                self._chunk_size += 100 + 50 * len(paths or ())
            return bool(parsed == before)
        for path in paths:
            value = before
            for step in path:
                value = value[step]
            if value is not None:
                return False
        return True

    def _unchanged_node(
        self, memo: _Memo, digest: bytes, node: dict[str, Any], flags: int
    ) -> bytes:
        """The bytes a hit parses for a node in which sanitizing changed nothing.

        Such a node is stored without serializing anything (most workflows a capture meets for
        the first time are never sanitized again by this memo); its first hit serializes its
        fields but NODE_KEPT_KEYS (equal to their sanitized form) and keeps them for later hits.
        """
        result = _dumps({k: v for k, v in node.items() if k not in NODE_KEPT_KEYS})
        if memo.get(digest) is not None:  # still there (not evicted meanwhile)
            memo[digest] = (result, flags)
            self._chunk_size += len(result)
        return result

    def _walk_credentials(self, creds: dict[Any, Any], call: _Call) -> dict[str, Any]:
        """A node's credential references: keep ``id`` and ``name``, replace anything else."""
        out: dict[str, Any] = {}
        for ctype, ref in creds.items():
            if type(ctype) is not str:
                raise _not_json(ctype, key=True)
            if type(ref) is dict:
                kept: dict[str, Any] = {}
                for k, v in ref.items():
                    if k in ("id", "name") and (v is None or type(v) in (str, int)):
                        kept[k] = v
                        if type(v) is str:
                            self._scan_later(kept, k, v, call)
                        elif type(v) is int:
                            call.flags |= number_flags(v)
                    else:
                        kept[k] = self._secret_value(v, call, secret_numbers=True)
                out[ctype] = kept
            elif type(ref) is str:
                out[ctype] = ref
                self._scan_later(out, ctype, ref, call)
            elif ref is None or type(ref) in (bool, int, float):
                out[ctype] = ref
                if type(ref) is not bool and ref is not None:
                    call.flags |= number_flags(ref)
            else:
                out[ctype] = self._secret_value(ref, call, secret_numbers=True)
        return out

    def _scan_later(self, container: Any, key: Any, s: str, call: _Call) -> None:
        """Rule 3 for ``container[key] = s``, memoised or batched with the call's other strings."""
        if len(s) >= _MIN_SCAN_LEN and s not in self._memo:
            call.pending.append((container, key, s))

    def _pair_code(self, d: dict[Any, Any]) -> int:
        """For the value field of a name/value pair: _PAIR_VALUE if it holds a secret."""
        code = _PLAIN
        for field in _PAIR_NAME_FIELDS:
            name = d.get(field)
            if type(name) is str and name:
                c = self._name_code(name)
                if c == _SECRET:
                    return _PAIR_VALUE
                if c == _WEAK:
                    code = _WEAK
        return code

    # ---- rule 1: values under secret keys ----------------------------------------------------

    def _secret_value(self, v: Any, call: _Call, *, secret_numbers: bool) -> Any:
        t = type(v)
        if t is str:
            return self._redact_string(v)
        if v is None or t is bool:
            return v
        if t is int or t is float:
            if secret_numbers:
                if t is float and not math.isfinite(v):
                    call.flags |= _NOT_MEMO  # its bytes say null: a null twin must not get this
                return self.marker(repr(v))
            call.flags |= number_flags(v)
            return v
        if t is dict:
            out: dict[str, Any] = {}
            for k, x in v.items():
                if type(k) is not str:
                    raise _not_json(k, key=True)
                out[k] = self._secret_value(x, call, secret_numbers=self._key_code(k) == _SECRET)
            return out
        if t is list or t is tuple:
            return [self._secret_value(x, call, secret_numbers=True) for x in v]
        raise _not_json(v)

    def _redact_string(self, s: str) -> str:
        if not s:
            return s
        if "{{" in s:
            return self._redact_template(s)
        if s[0] == "=":
            return "=" + self._redact_literal(s[1:], template=False)
        return self._redact_literal(s, template=False)

    def _redact_template(self, s: str) -> str:
        """An n8n expression under a secret key: keep ``{{ ... }}``, replace literal text."""
        parts = _TEMPLATE_RE.split(s)
        out: list[str] = []
        for i, part in enumerate(parts):
            if i % 2:
                out.append(self._scan_one(part))
            elif i == 0 and part.startswith("="):
                out.append("=" + self._redact_literal(part[1:], template=True))
            else:
                out.append(self._redact_literal(part, template=True))
        return "".join(out)

    def _redact_literal(self, text: str, *, template: bool) -> str:
        core = text.strip()
        if not core:
            return text
        rest = MARKER_RE.sub("", core)
        if not rest.strip() or _is_masked(rest.strip()):
            return text  # already redacted (or only a mask like "****")
        lead = text[: len(text) - len(text.lstrip())]
        trail = text[len(text.rstrip()) :]
        m = _SCHEME_RE.fullmatch(core)
        if m:
            scheme, sep, credential = m.groups()
            cred_rest = MARKER_RE.sub("", credential).strip()
            if not cred_rest or _is_masked(cred_rest):
                return text
            return f"{lead}{scheme}{sep}{self.marker(credential)}{trail}"
        if (core.lower() in _SCHEME_WORDS and (template or text[-1:].isspace())) or (
            template and not _has_alnum(rest)
        ):
            return text  # "Bearer " (before "{{ $json.token }}"), separators between expressions
        return f"{lead}{self.marker(core)}{trail}"

    # ---- rule 3: secret-looking substrings -----------------------------------------------------

    def _scan_one(self, s: str) -> str:
        if len(s) < _MIN_SCAN_LEN:
            return s
        if s in self._memo:
            return s
        families = _prefilter([s]).get(0, 0)
        r = self._scan_text(s, families) if families else s
        if r == s:
            self._remember(s)
            return s
        return r

    def _remember(self, s: str) -> None:
        size = len(s)
        if self._memo_size + size > self._cache_limit:
            if size > self._cache_limit // 4:
                return
            self._memo = {}
            self._memo_size = 0
        self._memo[s] = s
        self._memo_size += size

    def _resolve(self, pending: list[_Patch]) -> None:
        """Scan the strings not seen before in one batch and patch the output tree."""
        unique = list(dict.fromkeys([p[2] for p in pending]))
        results: dict[str, str] = {}
        for i, families in _prefilter(unique).items():
            s = unique[i]
            r = self._scan_text(s, families)
            if r != s:
                results[s] = r
        # Only strings without secrets are memoised: the memo never holds a secret.
        clean = [s for s in unique if s not in results] if results else unique
        size = sum(map(len, clean))
        if self._memo_size + size > self._cache_limit:
            self._memo = {}
            self._memo_size = 0
        if size <= self._cache_limit // 4:
            self._memo.update(zip(clean, clean, strict=True))
            self._memo_size += size
        if results:
            for container, key, s in pending:
                patched = results.get(s)
                if patched is not None:
                    container[key] = patched

    def _scan_text(self, s: str, families: int) -> str:
        """Rule 3 until nothing changes: a replacement can change the context of what is left
        (``<token>"apiKey": "..."``), and a second ``sanitize`` must find nothing more to do."""
        r = self._scan_once(s, families)
        for _ in range(64):
            if r == s:
                break
            s = r
            families = _prefilter([s]).get(0, 0)
            r = self._scan_once(s, families) if families else s
        return r

    def _scan_once(self, s: str, families: int) -> str:
        if MARKER_PREFIX not in s:
            return self._scan_plain(s, families)
        # Markers are never rescanned: scan the text between them.
        out: list[str] = []
        last = 0
        for m in MARKER_RE.finditer(s):
            out.append(self._scan_plain(s[last : m.start()], families))
            out.append(m.group())
            last = m.end()
        out.append(self._scan_plain(s[last:], families))
        return "".join(out)

    def _scan_plain(self, s: str, families: int) -> str:
        if len(s) < _MIN_SCAN_LEN:
            return s
        low = s.lower()
        if len(low) != len(s):
            low = s.translate(_ASCII_LOWER)
        spans: list[tuple[int, int]] = []
        if families & _PEM:
            _find_pem(s, spans)
        if families & _JWT:
            spans.extend(m.span() for m in _JWT_RE.finditer(s))
        if families & _PREFIX:
            _find_prefixed_tokens(s, low, spans)
        if families & _URL:
            for literal, pattern in _SECRET_URLS:
                if literal in low:
                    for m in pattern.finditer(s):
                        if _looks_random(m.group(1).replace("/", "")):
                            spans.append(m.span(1))
        if families & _SCHEME:
            _find_schemes(s, low, spans)
        if families & _USERINFO:
            for m in _URL_USERINFO_RE.finditer(s):
                if _is_literal_value(m.group(2), quoted=True):
                    spans.append(m.span(2))
        if families & _KV:
            _find_assignments(s, low, spans)
        if not spans:
            return s
        return self._replace_spans(s, spans)

    def _replace_spans(self, s: str, spans: list[tuple[int, int]]) -> str:
        spans.sort()
        merged: list[tuple[int, int]] = []
        cur_a, cur_b = spans[0]
        for a, b in spans[1:]:
            if a < cur_b:
                cur_b = max(cur_b, b)
            else:
                merged.append((cur_a, cur_b))
                cur_a, cur_b = a, b
        merged.append((cur_a, cur_b))
        out: list[str] = []
        last = 0
        for a, b in merged:
            if b <= a:
                continue
            out.append(s[last:a])
            out.append(self.marker(s[a:b]))
            last = b
        out.append(s[last:])
        return "".join(out)


_Sub = Callable[[Any, _Call, int], Any]


class _NotPlain(Exception):
    """A subclass of a JSON type (an OrderedDict, a str enum): convert the input, walk again."""


_JSON_TYPES: Final = (str, int, float, dict, list, tuple)


def _not_json(value: Any, *, key: bool = False) -> Exception:
    if isinstance(value, str) or (not key and isinstance(value, _JSON_TYPES)):
        return _NotPlain()
    what = "object keys must be strings" if key else "not a JSON value"
    return SanitizationError(f"{what}: {type(value).__name__}")


def _null_paths(value: Any, most: int) -> _NullPaths:
    """The paths (keys and indexes) of the nulls in a parsed chunk that holds at most ``most``;
    None if there are more than ``_MAX_NULL_PATHS``.

    Recursive, allocating nothing but the paths found: a walk that made a path per container
    would set off collections of the freshly parsed chunk. The depth is bounded by orjson's
    (the chunk's bytes came from ``orjson.dumps``, which refuses more than 255 levels).
    """
    found: list[tuple[str | int, ...]] = []
    with contextlib.suppress(_Enough):
        _find_nulls(value, [], found, min(most, _MAX_NULL_PATHS + 1))
    return tuple(found) if len(found) <= _MAX_NULL_PATHS else None


class _Enough(Exception):
    """``_find_nulls`` found as many nulls as the bytes can hold (or more than are kept)."""


def _find_nulls(
    value: Any, path: list[str | int], found: list[tuple[str | int, ...]], most: int
) -> None:
    items: Iterable[tuple[str | int, Any]] = (
        value.items() if type(value) is dict else enumerate(value)
    )
    for k, x in items:
        if x is None:
            found.append((*path, k))
            if len(found) >= most:
                raise _Enough
        else:
            t = type(x)
            if t is dict or t is list:
                path.append(k)
                _find_nulls(x, path, found, most)
                path.pop()


_NULL_TOKENS: Final = (b":null", b",null", b"[null")  # a null value in orjson's compact output


def _has_null(raw: bytes) -> int:
    """_HAS_NULL if the bytes may hold a null value: one follows ``:``, ``,`` or ``[`` (a "null"
    inside a string, as in JavaScript code, usually does not)."""
    if b"null" not in raw:  # the common case, in one scan
        return 0
    return _HAS_NULL if b":null" in raw or b",null" in raw or b"[null" in raw else 0


def _kept_flags(v: Any) -> int:
    """Number flags of a node field kept as it is (NODE_KEPT_KEYS).

    Anything but plain JSON is kept too, for ``canonicalize`` to convert or refuse as before; the
    node is then not memoised (its bytes may not tell it from a plain twin).
    """
    t = type(v)
    if t is str or v is None or t is bool:
        return 0
    if t is int:
        return NUMBER_SLOW if v > _SAFE_INT or v < -_SAFE_INT else 0
    if t is float:
        return number_flags(v)
    flags = 0
    if t is list:
        for x in v:
            flags |= _kept_flags(x)
    elif t is dict and all(type(k) is str for k in v):
        for x in v.values():
            flags |= _kept_flags(x)
    else:
        flags = NUMBER_SLOW | _NOT_MEMO
    return flags


def _nonfinite(value: Any, where: str) -> InvalidInput:
    """InvalidInput naming the first NaN or infinity in ``value`` (dotted path after ``where``)."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, v = stack.pop()
        t = type(v)
        if t is float and not math.isfinite(v):
            return InvalidInput("NaN and Infinity are not JSON", field=path or None)
        if t is dict:
            stack.extend((f"{path}.{k}" if path else k, x) for k, x in reversed(v.items()))
        elif t is list:
            stack.extend((f"{path}[{i}]", x) for i, x in reversed(list(enumerate(v))))
    return InvalidInput("NaN and Infinity are not JSON")


def _to_plain(value: Any) -> Any:
    """A copy made of plain dict, list, str, int, float, bool and None (or SanitizationError)."""
    try:
        return _plain(value)
    except RecursionError as err:
        raise SanitizationError("value is nested too deeply to be sanitized") from err


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SanitizationError(f"object keys must be strings: {type(k).__name__}")
            out[str(k)] = _plain(v)
        return out
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    raise SanitizationError(f"not a JSON value: {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Detectors (module functions so that they are easy to test one by one)
# --------------------------------------------------------------------------------------------


def _prefilter(strings: list[str]) -> dict[int, int]:
    """For each string index with a prefilter hit: the bit set of detector families to run."""
    text = "\x00".join(strings).encode("utf-8", "surrogatepass").lower()
    if text.count(b"\x00") != len(strings) - 1:  # a string holds NUL: look at each on its own
        hits: dict[int, int] = {}
        for i, s in enumerate(strings):
            families = _prefilter_text(s.encode("utf-8", "surrogatepass"))
            if families:
                hits[i] = families
        return hits
    found: dict[int, int] = {}
    count = text.count
    find = text.find
    for union, branches, mask in _PREFILTER_GROUPS:
        search = union.search
        m = search(text)
        idx = 0
        last = 0
        while m is not None:
            p = m.start()
            idx += count(b"\x00", last, p)
            last = p  # a match never starts at a NUL
            if len(branches) == 1:
                families = mask
            else:
                families = 0
                for family, pattern in branches:
                    if not families & family and pattern.match(text, p):
                        families |= family
            have = found.get(idx, 0) | families
            found[idx] = have
            if have & mask != mask:  # other families of the group may still occur here
                m = search(text, p + 1)
                continue
            nxt = find(b"\x00", p)
            if nxt == -1:
                break
            idx += 1
            last = nxt + 1
            m = search(text, last)
    return found


def _prefilter_text(raw: bytes) -> int:
    text = raw.lower()
    families = 0
    for family, pattern in _PREFILTER:
        if not families & family and pattern.search(text):
            families |= family
    return families


def _find_prefixed_tokens(s: str, low: str, spans: list[tuple[int, int]]) -> None:
    for literals, pattern, lead in _PREFIX_TOKENS:
        if not any(lit in low for lit in literals):
            continue
        for m in pattern.finditer(s):
            a, b = m.span()
            if lead and a and s[a - 1] in _TOKEN_CHARS:
                continue  # inside a word: "task-...", "monkey-..."
            if literals == ("sk-",) and not _looks_random(m.group()[3:]):
                continue  # "sk-learn-is-a-library-for-ml"
            spans.append((a, b))


def _find_pem(s: str, spans: list[tuple[int, int]]) -> None:
    for m in _PEM_BEGIN_RE.finditer(s):
        a = m.end()
        end_tag = f"-----END {m.group(1)}-----"
        e = s.find(end_tag, a)
        b = e if e != -1 else _PEM_BODY_RE.match(s, a).end()  # type: ignore[union-attr]
        while a < b and (s[a].isspace() or s.startswith(("\\n", "\\r"), a)):
            a += 2 if s[a] == "\\" else 1
        while b > a and (s[b - 1].isspace() or s[b - 2 : b] in ("\\n", "\\r")):
            b -= 2 if s[b - 2 : b] in ("\\n", "\\r") else 1
        if _B64_RUN_RE.search(s, a, b):
            spans.append((a, b))


def _find_schemes(s: str, low: str, spans: list[tuple[int, int]]) -> None:
    """``Bearer <token>`` and ``Basic <base64 user:password>`` anywhere in a string."""
    for word in ("bearer", "basic"):
        p = low.find(word)
        while p != -1:
            end = p + len(word)
            if p == 0 or not s[p - 1].isalnum():
                m = _BEARER_TOKEN_RE.match(s, end)
                if m:
                    token = m.group(1)
                    if (word == "bearer" and _looks_random(token)) or (
                        word == "basic" and _is_basic_credential(token)
                    ):
                        spans.append(m.span(1))
            p = low.find(word, end)


def _is_literal_value(value: str, *, quoted: bool) -> bool:
    """Does this assigned value look like a literal secret (not code, an expression or a hint)?"""
    v = value.strip()
    if not v or _is_masked(v):
        return False
    if "{{" in v or "${" in v or "{%" in v or v[0] in "{$<[(`":
        return False
    if _PLACEHOLDER_RE.fullmatch(v.strip("*_ ")):
        return False
    if not quoted:
        low = v.lower()
        if low in ("true", "false", "null", "none", "undefined", "nil"):
            return False
        if _IDENTIFIER_RE.fullmatch(v):
            return False  # a variable, a member expression or a call: code, not a literal
    elif v.startswith(("+", "=")) or v.endswith("+") or " + " in v:
        return False  # string concatenation: 'token=' + token
    return True


def _previous_char(s: str, i: int) -> str:
    """The character before ``s[i]``, skipping blanks, escaped line breaks and backslashes."""
    while i > 0:
        c = s[i - 1]
        if c in " \t\r\n\\":
            i -= 1
        elif c in "nrt" and i > 1 and s[i - 2] == "\\":
            i -= 2
        else:
            return c
    return "\n"


def _find_assignments(s: str, low: str, spans: list[tuple[int, int]]) -> None:
    """``password = "..."``, ``"apiKey": "..."``, ``?api_key=...``, ``Authorization: ...``."""
    n = len(s)
    seen: set[int] = set()
    for kw in _KV_KEYWORDS:
        p = low.find(kw)
        while p != -1:
            a = p
            while a > 0 and s[a - 1] in _ID_CHARS:
                a -= 1
            b = p + len(kw)
            while b < n and s[b] in _ID_CHARS:
                b += 1
            if a not in seen:
                seen.add(a)
                _assignment_at(s, a, b, spans)
            p = low.find(kw, b)


def _assignment_at(s: str, a: int, b: int, spans: list[tuple[int, int]]) -> None:
    n = len(s)
    key = s[a:b].strip(".-")
    norm = _normalize_key(key)
    in_query = a > 0 and s[a - 1] in "?&"
    weak = False
    if not (_is_secret_normalized(norm, frozenset()) or (in_query and norm in _PAIR_ONLY_NAMES)):
        if not _is_weak_normalized(norm):
            return
        weak = True  # "geminiKey": "..." counts only if the value looks like an API key
    if a > 0 and s[a - 1] in "\"'" and _previous_char(s, a - 1) not in "{,([\n":
        return  # a quoted string that is not an object key: cond ? "pass" : "fail"
    # Closing quote or bracket of the key, blanks, then ":" or "=" (not "==", "=>", "::").
    i = b
    skipped = 0
    while i < n and skipped < 3 and s[i] in "\"'\\]":
        i += 1
        skipped += 1
    while i < n and s[i] in " \t":
        i += 1
    if i >= n:
        return
    sep = s[i]
    if sep in ":=":
        nxt = s[i + 1 : i + 2]
        if nxt in ("=", ">") or (sep == ":" and nxt == ":"):
            return
        i += 1
        while i < n and s[i] in " \t":
            i += 1
    elif not (norm == "password" and sep in "'\"" and i > b and s[b] in " \t"):
        return  # SQL: PASSWORD 'secret'
    if i >= n:
        return
    header = norm in _HEADER_KEYS
    # The value: quoted (", ', `, or \" inside escaped JSON) or bare.
    if s.startswith('\\"', i):
        start = i + 2
        end = s.find('\\"', start)
        quoted = True
    elif s[i] in "\"'`":
        q = s[i]
        start = i + 1
        end = start
        while end < n and s[end] != q and (q == "`" or s[end] not in "\r\n"):
            end += 2 if s[end] == "\\" else 1
        if end >= n or s[end] != q:
            end = -1
        quoted = True
    else:
        start = i
        stop = _LINE_END if header else _UNQUOTED_END
        end = start
        while end < n and s[end] not in stop:
            end += 1
        quoted = False
    if end == -1 or end <= start or end - start > _MAX_ASSIGNED_VALUE:
        return  # no value, or a block of code rather than a value
    value = s[start:end]
    stripped = value.strip()
    if not stripped:
        return
    start += len(value) - len(value.lstrip())
    end = start + len(stripped)
    if weak:
        if _looks_like_key_value(stripped):
            spans.append((start, end))
        return
    scheme = _SCHEME_RE.match(stripped)
    if scheme and (header or norm == "bearer" or scheme.group(1).lower() in ("bearer", "basic")):
        credential = scheme.group(3).strip()
        if not quoted and not header:
            cut = 0
            while cut < len(credential) and credential[cut] not in _UNQUOTED_END:
                cut += 1
            credential = credential[:cut]
        if not _is_literal_value(credential, quoted=True):
            return
        start = start + scheme.start(3)
        end = start + len(credential)
        spans.append((start, end))
        return
    if "-----BEGIN" in stripped:
        return  # a PEM block: the PEM detector decides
    if norm in ("cookie", "setcookie", "cookies") and "=" in stripped:
        pairs = [part.partition("=")[2].strip() for part in stripped.split(";")]
        if not any(pairs):
            return  # "access_token=" with no value
    if not _is_literal_value(stripped, quoted=quoted):
        return
    spans.append((start, end))


# --------------------------------------------------------------------------------------------
# Markers in sanitized trees (replay: "these values must be supplied")
# --------------------------------------------------------------------------------------------


def _escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def find_markers(value: Any) -> list[str]:
    """JSON Pointers (RFC 6901) of every string that holds at least one marker, in tree order."""
    found: list[str] = []
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        pointer, v = stack.pop()
        if isinstance(v, str):
            if MARKER_PREFIX in v and MARKER_RE.search(v):
                found.append(pointer)
        elif isinstance(v, dict):
            stack.extend(
                (f"{pointer}/{_escape_pointer(str(k))}", x) for k, x in reversed(v.items())
            )
        elif isinstance(v, list | tuple):
            stack.extend((f"{pointer}/{i}", x) for i, x in reversed(list(enumerate(v))))
    return found


def contains_marker(value: Any) -> bool:
    """True if any string in the tree holds a marker."""
    stack: list[Any] = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if MARKER_PREFIX in v and MARKER_RE.search(v):
                return True
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
    return False
