"""Bearer-token authentication with scopes.

Tokens are never configured in clear: the server knows only their SHA-256 digests (hex), each with
a set of scopes. Two sources, both optional and combined:

``EXECVAULT_TOKENS``
    ``<sha256hex>:<scope>,<scope>;<sha256hex>:<scope>`` (entries split by ``;`` or newlines).
``EXECVAULT_TOKENS_FILE``
    one ``<sha256hex> <scope>,<scope> [# name]`` a line; blank lines and ``#`` comments skipped.

A request's token is hashed and compared with *every* configured digest by
``hmac.compare_digest`` (no early exit), so the time taken does not depend on which digest, if
any, matched. ``admin`` implies every other scope. ``backfill`` is not a route's scope but a
widening of ``ingest`` (a backfill token holds both): a capture whose ``createdAt`` is older than
``capture_max_age_seconds``.

With no token configured at all the service is open (every request gets every scope); the CLI's
``serve`` then refuses any address but loopback. A tokens file that is configured but missing,
unreadable or empty is an error, never an open service.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import Forbidden, Unauthorized
from archiver.config import Settings
from archiver.errors import InvalidInput

__all__ = [
    "SCOPES",
    "TOKEN_PREFIX",
    "Principal",
    "TokenEntry",
    "TokenTable",
    "bearer_scheme",
    "load_tokens",
    "new_token",
    "parse_scopes",
    "parse_tokens_env",
    "parse_tokens_file",
    "require_scope",
    "token_digest",
]

SCOPES: Final = ("ingest", "backfill", "read", "query", "compliance", "retention", "admin")
TOKEN_PREFIX: Final = "evt_"
_MAX_TOKEN_CHARS: Final = 1024
_HEX: Final = frozenset("0123456789abcdef")

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerToken",
    description="`Authorization: Bearer <token>`; make one with `execvault token new`.",
)


@dataclass(frozen=True, slots=True)
class TokenEntry:
    digest: bytes
    scopes: frozenset[str]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the matched token's name and scopes (everything when auth is off)."""

    name: str | None
    scopes: frozenset[str]
    authenticated: bool
    #: the first 12 hex digits of the token's configured digest (not a secret: the tokens file
    #: holds the digests), to tell unnamed tokens apart in audit records
    key_id: str | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    @property
    def label(self) -> str:
        """Who, for an audit record: the token's name, else ``token:<key id>``; never the token."""
        if self.name:
            return self.name
        if self.key_id:
            return f"token:{self.key_id}"
        return "anonymous (no tokens configured)"


_OPEN: Final = Principal(name=None, scopes=frozenset(SCOPES), authenticated=False)


@dataclass(frozen=True, slots=True)
class TokenTable:
    entries: tuple[TokenEntry, ...] = ()

    @property
    def open(self) -> bool:
        """No token configured: every request is allowed."""
        return not self.entries

    def lookup(self, token: str) -> TokenEntry | None:
        """The entry whose digest matches ``token``; every digest is compared, in constant time."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: TokenEntry | None = None
        for entry in self.entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        return found

    def authorize(self, token: str | None, scope: str, *alternatives: str) -> Principal:
        """The caller for ``token`` if it may use ``scope`` (or one of ``alternatives``); else
        Unauthorized or Forbidden."""
        if self.open:
            return _OPEN
        if token is None:
            raise Unauthorized(
                "a bearer token is required",
                field="Authorization",
                headers={"WWW-Authenticate": 'Bearer realm="execvault"'},
            )
        entry = self.lookup(token) if len(token) <= _MAX_TOKEN_CHARS else None
        if entry is None:
            raise Unauthorized(
                "the bearer token is not valid",
                field="Authorization",
                headers={"WWW-Authenticate": 'Bearer realm="execvault", error="invalid_token"'},
            )
        principal = Principal(
            name=entry.name, scopes=entry.scopes, authenticated=True, key_id=entry.digest.hex()[:12]
        )
        wanted = (scope, *alternatives)
        if not any(principal.has(s) for s in wanted):
            names = " or ".join(f"'{s}'" for s in wanted)
            raise Forbidden(
                f"this token lacks the {names} scope",
                field="Authorization",
                headers={
                    "WWW-Authenticate": (
                        'Bearer realm="execvault", error="insufficient_scope", '
                        f'scope="{" ".join(wanted)}"'
                    )
                },
            )
        return principal


def token_digest(token: str) -> str:
    """The hex SHA-256 digest under which ``token`` is configured."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits), shown once to its owner and never stored."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_scopes(text: str, field: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    if not scopes:
        raise InvalidInput("at least one scope is required", field=field)
    unknown = scopes - set(SCOPES)
    if unknown:
        raise InvalidInput(
            f"unknown scope(s) {sorted(unknown)}; known: {', '.join(SCOPES)}", field=field
        )
    return scopes


def _digest(text: str, field: str) -> bytes:
    hexdigest = text.strip().lower()
    if len(hexdigest) != 64 or not set(hexdigest) <= _HEX:
        raise InvalidInput(
            "a token must be configured as its SHA-256 digest (64 hex digits), never in clear",
            field=field,
        )
    return bytes.fromhex(hexdigest)


def parse_tokens_env(text: str) -> tuple[TokenEntry, ...]:
    """Entries of ``EXECVAULT_TOKENS``: ``<sha256hex>:<scopes>`` split by ``;`` or newlines."""
    entries: list[TokenEntry] = []
    parts = [p.strip() for p in text.replace("\n", ";").split(";")]
    for number, part in enumerate((p for p in parts if p), start=1):
        field = f"tokens[{number}]"
        digest, sep, scopes = part.partition(":")
        if not sep:
            raise InvalidInput("expected <sha256hex>:<scope>,<scope>", field=field)
        entries.append(TokenEntry(_digest(digest, field), parse_scopes(scopes, field)))
    return tuple(entries)


def parse_tokens_file(path: str | Path) -> tuple[TokenEntry, ...]:
    """Entries of a tokens file: ``<sha256hex> <scopes> [# name]`` a line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInput(
            f"cannot read the tokens file ({type(err).__name__})", field="tokens_file"
        ) from None
    entries: list[TokenEntry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        content, _, comment = raw.partition("#")
        words = content.split()
        if not words:
            continue
        field = f"tokens_file:{number}"
        if len(words) < 2:
            raise InvalidInput("expected <sha256hex> <scope>,<scope> [# name]", field=field)
        name = comment.strip() or None
        entries.append(
            TokenEntry(_digest(words[0], field), parse_scopes("".join(words[1:]), field), name)
        )
    if not entries:
        raise InvalidInput(
            "the tokens file holds no tokens (refusing to run open by accident)",
            field="tokens_file",
        )
    return tuple(entries)


def load_tokens(settings: Settings) -> TokenTable:
    """The token table configured by ``settings`` (env string and file, combined)."""
    entries: list[TokenEntry] = []
    if settings.tokens:
        entries.extend(parse_tokens_env(settings.tokens))
    if settings.tokens_file:
        entries.extend(parse_tokens_file(settings.tokens_file))
    _no_duplicates(entries)
    return TokenTable(tuple(entries))


def _no_duplicates(entries: Iterable[TokenEntry]) -> None:
    seen: set[bytes] = set()
    for entry in entries:
        if entry.digest in seen:
            raise InvalidInput("a token digest is configured twice", field="tokens")
        seen.add(entry.digest)


def require_scope(scope: str, *alternatives: str) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the caller, if its token carries ``scope`` or one of
    ``alternatives`` (401/403 otherwise)."""
    for name in (scope, *alternatives):
        if name not in SCOPES:
            raise ValueError(f"unknown scope {name!r}")

    async def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    ) -> Principal:
        table: TokenTable = request.app.state.tokens
        token = credentials.credentials if credentials is not None else None
        return table.authorize(token, scope, *alternatives)

    dependency.__name__ = "require_" + "_or_".join((scope, *alternatives))
    return dependency
