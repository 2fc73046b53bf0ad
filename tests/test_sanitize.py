"""Unit tests of archiver.sanitize: each rule, markers, no mutation, idempotence, expressions."""

from __future__ import annotations

import copy
import functools
import math
import operator
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import archiver.sanitize as sanitize_module
from archiver.canonical import number_flags
from archiver.errors import InvalidInput, SanitizationError
from archiver.sanitize import (
    MARKER_PREFIX,
    MARKER_RE,
    NODE_KEPT_KEYS,
    Sanitizer,
    contains_marker,
    find_markers,
    is_secret_key,
    is_secret_pair_name,
)

KEY = b"unit-test-hmac-key-0123456789abcd"
S = Sanitizer(KEY)

# Synthetic credentials in the providers' formats (not real ones).
OPENAI = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
ANTHROPIC = "sk-ant-api03-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe"
SLACK = "xoxb-" + "1234567890-0987654321-AbCdEfGhIjKlMnOpQrSt"
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
GITHUB_PAT = "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGH"
GITLAB = "glpat-" + "Ab1Cd2Ef3Gh4Ij5Kl6Mn"
AWS = "AKIA" + "IOSFODNN7EXAMPLE"
GOOGLE = "AIza" + "SyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"
HF = "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
SENDGRID = "SG." + "aBcDeFgHiJkLmNoPqRsTuV" + "." + "wXyZ0123456789aBcDeFgHiJkLmNoPqRsTuVwXyZ012"
STRIPE = "sk_live_" + "51HxYzAbCdEfGhIjKlMnOp"
STRIPE_RESTRICTED = "rk_live_" + "51HxYzAbCdEfGhIjKlMnOp"
TELEGRAM = "123456789:" + "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
SLACK_HOOK_PATH = "T00000000/B00000000/" + "XXXXXXXXXXXXXXXXXXXXXXXX".replace("X", "a1")
DISCORD_HOOK_PATH = "123456789012345678/" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdEf"
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R4"


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, str):
        yield value


def dumped(value: Any) -> str:
    return orjson.dumps(value).decode()


def m(secret: str) -> str:
    return S.marker(secret)


# ---- markers ----------------------------------------------------------------------------------


def test_marker_format() -> None:
    marker = S.marker("hunter2")
    assert re.fullmatch(r"<redacted:hmac-sha256:[0-9a-f]{32}>", marker)
    assert MARKER_RE.fullmatch(marker)
    assert marker.startswith(MARKER_PREFIX)
    assert "hunter2" not in marker


def test_marker_is_the_truncated_hmac_sha256() -> None:
    import hashlib
    import hmac

    digest = hmac.new(KEY, b"hunter2", hashlib.sha256).hexdigest()
    assert S.marker("hunter2") == f"<redacted:hmac-sha256:{digest[:32]}>"


def test_equal_secrets_equal_markers_different_secrets_or_keys_differ() -> None:
    other_key = Sanitizer(b"another-hmac-key-0123456789abcdef")
    assert S.marker("hunter2") == S.marker("hunter2") == Sanitizer(KEY).marker("hunter2")
    assert S.marker("hunter2") != S.marker("hunter3")
    assert S.marker("hunter2") != other_key.marker("hunter2")


def test_same_secret_gets_the_same_marker_wherever_it_appears() -> None:
    out = S.sanitize(
        {
            "apiKey": OPENAI,
            "jsCode": f"const k = '{OPENAI}';",
            "headerParameters": {
                "parameters": [{"name": "Authorization", "value": f"Bearer {OPENAI}"}]
            },
            "pinData": {"Webhook": [{"json": {"note": f"use {OPENAI} here"}}]},
        }
    )
    assert dumped(out).count(m(OPENAI)) == 4
    assert OPENAI not in dumped(out)


@pytest.mark.parametrize("key", [b"", b"short", b"x" * 15, "a string key of 32 characters!!!"])
def test_hmac_key_must_be_16_bytes(key: Any) -> None:
    with pytest.raises(InvalidInput) as err:
        Sanitizer(key)
    assert err.value.field == "hmacKey"


def test_16_byte_key_is_enough() -> None:
    assert MARKER_RE.fullmatch(Sanitizer(b"k" * 16).marker("x"))


# ---- rule 1: secret-looking keys -----------------------------------------------------------------

SECRET_KEYS = [
    "password",
    "Password",
    "PASSWORD",
    "passwd",
    "pwd",
    "pass",
    "db_password",
    "smtp.password",
    "passphrase",
    "secret",
    "clientSecret",
    "client_secret",
    "CLIENT-SECRET",
    "signingSecret",
    "webhookSecret",
    "apiKey",
    "api_key",
    "API-KEY",
    "api key",
    "x-api-key",
    "X-API-Key",
    "openaiApiKey",
    "apiToken",
    "accessToken",
    "access_token",
    "refreshToken",
    "authToken",
    "X-Auth-Token",
    "token",
    "id_token",
    "bearer",
    "privateKey",
    "private_key",
    "secretKey",
    "accessKey",
    "secretAccessKey",
    "aws_secret_access_key",
    "authorization",
    "Authorization",
    "Proxy-Authorization",
    "cookie",
    "Cookie",
    "set-cookie",
    "Set-Cookie",
    "auth[access_token]",
    "data[BOT][302][AUTH][refresh_token]",
]
STRUCTURAL_KEYS = [
    "authentication",
    "genericAuthType",
    "nodeCredentialType",
    "sendHeaders",
    "sendQuery",
    "maxTokens",
    "max_tokens",
    "maxTokensToSample",
    "tokens",
    "tokenType",
    "token_type",
    "tokenUrl",
    "accessTokenUrl",
    "tokenCount",
    "totalTokenCount",
    "promptTokensDetails",
    "nextPageToken",
    "pageToken",
    "sessionKey",
    "sessionId",
    "sessionIdType",
    "key",
    "keyName",
    "keyValue",
    "keyType",
    "issueKey",
    "fileKey",
    "memoryKey",
    "binaryDataKey",
    "allowUnauthorizedCerts",
    "passthroughBinaryImages",
    "secretName",
    "passwordField",
    "credentials",
    "x-hub-signature",
    "messages",
    "auth[domain]",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_looking_keys(key: str) -> None:
    assert is_secret_key(key)
    assert S.is_secret_key(key)
    assert S.sanitize({key: "s3cr3t-value"}) == {key: m("s3cr3t-value")}


@pytest.mark.parametrize("key", STRUCTURAL_KEYS)
def test_structural_keys_are_not_secret_looking(key: str) -> None:
    assert not is_secret_key(key)
    value = {key: "genericCredentialType", "n": {key: 500}, "b": {key: True}}
    assert S.sanitize(value) == value


def test_structural_n8n_parameters_survive() -> None:
    node = {
        "parameters": {
            "url": "https://api.example.com/v1/items",
            "authentication": "genericCredentialType",
            "genericAuthType": "httpHeaderAuth",
            "sendHeaders": True,
            "options": {"maxTokens": 500, "temperature": 0.2},
            "tokenType": "bearer",
            "sessionKey": "={{ $json.sessionId }}",
            "sessionIdType": "customKey",
            "operation": "upsert",
        },
        "type": "n8n-nodes-base.httpRequest",
        "typeVersion": 4.2,
        "position": [100, 200],
        "credentials": {"httpHeaderAuth": {"id": "oVwF1hVdy3Srvi9P", "name": "Header Auth"}},
    }
    assert S.sanitize(node) == node


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hunter2", "M"),
        ("x", "M"),
        (1234, "M"),
        (12.5, "M"),
        ("", ""),
        (None, None),
        (True, True),
        (False, False),
        ("****", "****"),
    ],
)
def test_value_kinds_under_a_secret_key(value: Any, expected: Any) -> None:
    out = S.sanitize({"password": value})["password"]
    if expected == "M":
        assert out == m(str(value) if isinstance(value, str) else repr(value))
    else:
        assert out == expected


def test_containers_under_a_secret_key_have_every_string_leaf_replaced() -> None:
    value = {
        "secrets": ["alpha-1", "beta-2", {"nested": "gamma-3", "count": 3, "on": True}],
        "token": {"access_token": "tok-1", "expires_in": 3600, "scope": "read write"},
    }
    out = S.sanitize(value)
    assert out["secrets"][0] == m("alpha-1")
    assert out["secrets"][2] == {"nested": m("gamma-3"), "count": 3, "on": True}
    assert out["token"]["access_token"] == m("tok-1")
    assert out["token"]["expires_in"] == 3600  # not under a secret-looking key itself
    assert out["token"]["scope"] == m("read write")


def test_numbers_in_a_list_under_a_secret_key_are_replaced() -> None:
    assert S.sanitize({"pins": 1, "secret": [1234, 5678]})["secret"] == [m("1234"), m("5678")]


def test_auth_scheme_stays_readable() -> None:
    out = S.sanitize(
        {
            "Authorization": "Bearer abc.def.ghi",
            "authorization": "Basic dXNlcjpwYXNz",
            "proxy-authorization": "Token 0123456789",
            "x-authorization": "Bearer ",
        }
    )
    assert out == {
        "Authorization": f"Bearer {m('abc.def.ghi')}",
        "authorization": f"Basic {m('dXNlcjpwYXNz')}",
        "proxy-authorization": f"Token {m('0123456789')}",
        "x-authorization": "Bearer ",
    }


def test_a_password_with_spaces_is_replaced_whole() -> None:
    assert S.sanitize({"password": "Bot is great"}) == {"password": m("Bot is great")}


def test_extra_secret_keys() -> None:
    s = Sanitizer(KEY, extra_secret_keys=["sessionId", "x-my-signature"])
    out = s.sanitize({"session_id": "abc", "X-My-Signature": "def", "sessionKey": "ghi"})
    assert out == {"session_id": m("abc"), "X-My-Signature": m("def"), "sessionKey": "ghi"}
    assert s.is_secret_key("SESSION-ID")


# ---- expressions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "={{ $json.token }}",
        "{{$credentials.apiKey}}",
        "={{ $env.API_KEY }}",
        "={{ $('Set').item.json.password }}",
        "=Bearer {{ $json.access_token }}",
        "=Basic {{ $json.b64 }}",
        "={{ $json.user }}:{{ $json.pass }}",
    ],
)
def test_expressions_are_kept(expression: str) -> None:
    value = {
        "password": expression,
        "headerParameters": {"parameters": [{"name": "Authorization", "value": expression}]},
        "jsonBody": f'={{"apiKey": "{expression}"}}',
    }
    assert S.sanitize(value) == value


def test_literal_secrets_inside_expressions_are_caught() -> None:
    out = S.sanitize(
        {
            "apiKey": "=abc123{{ $json.suffix }}",
            "url": f"=https://api.example.com/?q={{{{ $json.q }}}}&key={GOOGLE}",
            "jsonBody": f'={{{{ {{"token": "{OPENAI}"}} }}}}',
        }
    )
    assert out["apiKey"] == f"={m('abc123')}{{{{ $json.suffix }}}}"
    assert GOOGLE not in out["url"] and m(GOOGLE) in out["url"]
    assert OPENAI not in out["jsonBody"] and m(OPENAI) in out["jsonBody"]


def test_expression_mode_literal_without_braces_is_a_literal() -> None:
    assert S.sanitize({"password": "=hunter2"}) == {"password": f"={m('hunter2')}"}


# ---- rule 2: name/value pairs ----------------------------------------------------------------


def test_header_query_body_pairs() -> None:
    node = {
        "parameters": {
            "headerParameters": {
                "parameters": [
                    {"name": "Authorization", "value": "Bearer abcdef123456"},
                    {"name": "x-api-key", "value": "k-123"},
                    {"name": "Content-Type", "value": "application/json"},
                ]
            },
            "queryParameters": {
                "parameters": [
                    {"name": "key", "value": "982dc86a0c1bd4c71185d39ae9f36998"},
                    {"name": "api_key", "value": "YOUR_API_KEY"},
                    {"name": "q", "value": "n8n"},
                ]
            },
            "bodyParametersUi": {
                "parameter": [
                    {"name": "client_secret", "value": "cs-1"},
                    {"name": "grant_type", "value": "client_credentials"},
                ]
            },
        }
    }
    out = S.sanitize(node)["parameters"]
    headers = out["headerParameters"]["parameters"]
    assert headers[0]["value"] == f"Bearer {m('abcdef123456')}"
    assert headers[1]["value"] == m("k-123")
    assert headers[2]["value"] == "application/json"
    query = out["queryParameters"]["parameters"]
    assert query[0]["value"] == m("982dc86a0c1bd4c71185d39ae9f36998")
    assert query[1]["value"] == m("YOUR_API_KEY")  # rule 2 never guesses whether it is real
    assert query[2]["value"] == "n8n"
    body = out["bodyParametersUi"]["parameter"]
    assert body == [
        {"name": "client_secret", "value": m("cs-1")},
        {"name": "grant_type", "value": "client_credentials"},
    ]


@pytest.mark.parametrize(
    "pair",
    [
        {"key": "password", "value": "pw-1"},
        {"parameterName": "token", "value": "pw-1"},
        {"keyName": "x-api-key", "keyValue": "pw-1"},
        {"headerName": "Cookie", "headerValue": "pw-1"},
        {"id": "f1", "name": "CLIENT_SECRET", "type": "string", "value": "pw-1"},
        {"value": "pw-1", "name": "apiToken"},
    ],
)
def test_pair_shapes(pair: dict[str, Any]) -> None:
    out = S.sanitize([pair])[0]
    field = next(f for f in ("value", "keyValue", "headerValue") if f in pair)
    assert out[field] == m("pw-1")
    assert {k: v for k, v in out.items() if k != field} == {
        k: v for k, v in pair.items() if k != field
    }


def test_pairs_with_plain_names_or_expression_values_are_kept() -> None:
    value = [
        {"name": "Accept", "value": "application/json"},
        {"name": "token", "value": "={{ $json.token }}"},
        {"name": "Token Splitter", "value": "chunk"},
        {"__rl": True, "value": "1gVfyernVtgYXD-oPboxOSJYQ", "mode": "list"},
        {"name": "sessionKey", "value": "test-0123456789-abcdefghijkl"},
    ]
    assert S.sanitize(value) == value


def test_key_named_pairs_count_only_with_a_key_like_value() -> None:
    out = S.sanitize(
        [
            {"name": "openAIKey", "value": "Ab12Cd34Ef56Gh78Ij90"},
            {"name": "openAIKey", "value": "sk-proj-..."},
            {"name": "issueKey", "value": "PROJ12345678901234567"},
            {"name": "geminiKey", "value": "={{ $vars.GeminiKey }}"},
        ]
    )
    assert out[0]["value"] == m("Ab12Cd34Ef56Gh78Ij90")
    assert out[1]["value"] == "sk-proj-..."
    assert out[2]["value"] == "PROJ12345678901234567"
    assert out[3]["value"] == "={{ $vars.GeminiKey }}"
    assert S.sanitize({"jinaKey": "jina_0123456789abcdefABCDEF"}) == {
        "jinaKey": m("jina_0123456789abcdefABCDEF")
    }
    assert S.sanitize({"memoryKey": "chat_0123456789abcdefABCDEF"}) == {
        "memoryKey": "chat_0123456789abcdefABCDEF"
    }


def test_is_secret_pair_name() -> None:
    assert is_secret_pair_name("key")
    assert is_secret_pair_name("X-RapidAPI-Key")
    assert not is_secret_key("key")
    assert not is_secret_pair_name("Content-Type")


# ---- rule 3: secret-looking substrings ---------------------------------------------------------

TOKENS = [OPENAI, ANTHROPIC, SLACK, GITHUB, GITHUB_PAT, GITLAB, AWS, GOOGLE, HF, SENDGRID, STRIPE]
TOKENS += [STRIPE_RESTRICTED, TELEGRAM, JWT]
TOKENS += ["sk-" + "Q2xJ8vNf0aLw3ZbK7rTy5mHc", "whsec_" + "AbCdEfGhIjKlMnOpQrStUvWx12"]
TOKENS += ["n8n_api_" + "26b5bb6d39d337bd904f3d89fe88562d456c1cd1", "npm_" + "a1B2" * 9]


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize(
    "template",
    [
        "{}",
        "key: {} (do not share)",
        "const client = new Client('{}');",
        "https://api.example.com/v1/send?foo=bar&credential={}&x=1",
        "curl -H 'X-Thing: {}' https://example.com",
        '{{"data": "{}"}}',
    ],
)
def test_provider_tokens_anywhere(token: str, template: str) -> None:
    text = template.format(token)
    out = S.sanitize({"jsCode": text})["jsCode"]
    assert token not in out
    assert out == text.replace(token, m(token))


def test_telegram_bot_token_in_a_url() -> None:
    url = f"https://api.telegram.org/bot{TELEGRAM}/sendMessage"
    assert S.sanitize_text(url) == f"https://api.telegram.org/bot{m(TELEGRAM)}/sendMessage"


@pytest.mark.parametrize(
    "text",
    [
        "sk-learn-is-a-library-for-machine",  # no digits: a word, not a key
        "task-management-and-more-things-here",
        "risk_live_stream_of_things_here_ok",
        "sk-proj-...",
        "Bearer YOUR_API_KEY",
        "Bearer authentication is supported",
        "Basic understanding of CSS selectors",
        "Basic Variables",
        "eyJhbGciOi (truncated)",
        "https://discordapp.com/api/webhooks/XXX/XXX",
        "https://hooks.slack.com/services/...",
        "-----BEGIN PRIVATE KEY-----\n[INSERT YOUR KEY HERE]\n-----END PRIVATE KEY-----",
        "-----BEGIN PUBLIC KEY-----\n" + PEM_BODY + "\n-----END PUBLIC KEY-----",
        "mongodb://username:password@localhost:27017",
        "https://{{ $json.user }}:{{ $json.pass }}@example.com",
        "const password = $('Settings').item.json.password;",
        "const apiKey = item.json.GOOGLE_API_KEY; // from input",
        "apiKey: process.env.API_KEY,",
        "token => token.trim()",
        "if (password === expected) {",
        'x.includes(\'pass\') ? "pass" : "fail"',
        '"max_tokens": 64, "temperature": 0.7',
        "function f(token: string, secret?: string) {}",
        "AUTH: auth.access_token,",
        "Password: Bearer {insert your API key}",
        "x-api-key: YOUR_KEY_HERE",
        'const API_KEY = "**PUT_API_KEY_HERE**";',
        "&key=[YOUR_KEY]&cx=[YOUR_CX]",
        'document.cookie = "access_token="+response.access_token;',
        "Authorization: Bearer ****************",
        "pwd=abc",  # below the substring-scan minimum length
    ],
)
def test_text_that_only_looks_like_secrets_is_kept(text: str) -> None:
    assert S.sanitize({"notes": text}) == {"notes": text}


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcdef1234567890", "abcdef1234567890"),
        ("authorization: token 0123456789abcdef", "0123456789abcdef"),
        ("curl -H 'Authorization: Basic dXNlcjpwYXNz' https://x", "dXNlcjpwYXNz"),
        ("send Bearer Zx81Kq02Lm93Vn when asked", "Zx81Kq02Lm93Vn"),
        ("Basic dXNlcjpwYXNz is the header", "dXNlcjpwYXNz"),
        ("Cookie: session=abc123; theme=dark", "session=abc123; theme=dark"),
        (
            "Set-Cookie: sid=31d4d96e407aad42; Path=/; Secure",
            "sid=31d4d96e407aad42; Path=/; Secure",
        ),
        ("X-Api-Key: 0a1b2c3d4e5f", "0a1b2c3d4e5f"),
        ("postgres://admin:hunter2@db.internal:5432/app", "hunter2"),
        ("mongodb+srv://app:S3cr%40t@cluster0.example.net/db", "S3cr%40t"),
        ("https://user:p4ss@example.com/path", "p4ss"),
        ('const password = "S3cret!";', "S3cret!"),
        ("password: 'correct horse battery staple'", "correct horse battery staple"),
        ('db = connect(user="app", password="pw-12345")', "pw-12345"),
        ('{"apiKey": "abc123def456"}', "abc123def456"),
        ('{\\"client_secret\\": \\"cs-98765\\"}', "cs-98765"),
        ("https://api.example.com/data?api_key=abcd1234efgh&format=json", "abcd1234efgh"),
        ("https://www.googleapis.com/youtube/v3/search?part=id&key=0a1b2c3d4e", "0a1b2c3d4e"),
        ("https://x.example.com/unsubscribe?token=vkf5H_6Xokt", "vkf5H_6Xokt"),
        ("CREATE USER app WITH PASSWORD 'S3cur3-Pa55';", "S3cur3-Pa55"),
        ("Password:   S3cur3-Pa55\nSchema: public", "S3cur3-Pa55"),
        ("DB_PASSWORD=changeme123\nDB_HOST=db", "changeme123"),
        ("Value : PVEAPIToken=root@pam!n8n=1234", "root@pam!n8n=1234"),
        ("const GEMINI_KEY = 'Ab12Cd34Ef56Gh78Ij90';", "Ab12Cd34Ef56Gh78Ij90"),
        (f"https://hooks.slack.com/services/{SLACK_HOOK_PATH}", SLACK_HOOK_PATH),
        (f"https://discord.com/api/webhooks/{DISCORD_HOOK_PATH}", DISCORD_HOOK_PATH),
        (
            "https://hook.eu1.make.com/46263sznm3didxdkcuqvnlfqv2fv2l7q",
            "46263sznm3didxdkcuqvnlfqv2fv2l7q",
        ),
        (
            "https://ipqualityscore.com/api/json/ip/Mlg6aZdzI1mVehUD3Z5Ak5Vl4yNN7P8v/1.2.3.4",
            "Mlg6aZdzI1mVehUD3Z5Ak5Vl4yNN7P8v",
        ),
    ],
)
def test_secret_parts_of_text_are_replaced_and_the_rest_stays(text: str, secret: str) -> None:
    out = S.sanitize({"text": text})["text"]
    assert out == text.replace(secret, m(secret), 1)


def test_pem_private_key_body_is_replaced_and_the_armor_kept() -> None:
    for newline in ("\n", "\\n"):
        pem = newline.join(
            [
                "-----BEGIN RSA PRIVATE KEY-----",
                PEM_BODY.replace("\n", newline),
                "-----END RSA PRIVATE KEY-----",
            ]
        )
        code = f"const key = `{pem}`;"
        out = S.sanitize_text(code)
        assert "MIIEvQIBADAN" not in out
        assert "-----BEGIN RSA PRIVATE KEY-----" in out
        assert "-----END RSA PRIVATE KEY-----" in out
        assert out.count(MARKER_PREFIX) == 1


def test_pem_without_end_line() -> None:
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + PEM_BODY
    out = S.sanitize_text(text)
    assert "MIIEvQ" not in out and MARKER_RE.search(out)


def test_jwt_inside_a_cookie_header_in_pinned_data() -> None:
    value = {
        "pinData": {"Webhook": [{"json": {"headers": {"x-forwarded": f"n8n-auth={JWT}; a=1"}}}]}
    }
    out = S.sanitize(value)
    assert JWT not in dumped(out)
    assert m(JWT) in dumped(out)


def test_secrets_planted_everywhere_in_a_workflow() -> None:
    workflow: dict[str, Any] = {
        "name": "planted",
        "nodes": [
            {
                "id": "1",
                "name": "Code",
                "type": "n8n-nodes-base.code",
                "typeVersion": 2,
                "position": [0, 0],
                "parameters": {"jsCode": f"const token = '{SLACK}';\nreturn [];"},
                "notes": f"remember {GITHUB}",
            },
            {
                "id": "2",
                "name": "HTTP",
                "type": "n8n-nodes-base.httpRequest",
                "typeVersion": 4.2,
                "position": [200, 0],
                "parameters": {
                    "url": f"https://api.example.com/x?apikey={HF}",
                    "headerParameters": {
                        "parameters": [{"name": "Authorization", "value": f"Bearer {JWT}"}]
                    },
                    "options": {"proxy": "http://proxyuser:Pr0xyPass@proxy:3128"},
                },
                "credentials": {"httpHeaderAuth": {"id": "9", "name": "Header Auth"}},
            },
            {
                "id": "3",
                "name": "Postgres",
                "type": "n8n-nodes-base.postgres",
                "typeVersion": 2,
                "parameters": {"query": "ALTER USER app WITH PASSWORD 'pg-Secret-1';"},
            },
        ],
        "connections": {"Code": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}},
        "pinData": {"HTTP": [{"json": {"access_token": "at-1", "list": [[{"secret": "deep-1"}]]}}]},
        "settings": {"executionOrder": "v1"},
        "staticData": {"node:Trigger": {"refreshToken": "rt-1"}},
    }
    out = S.sanitize(workflow)
    text = dumped(out)
    for secret in (SLACK, GITHUB, HF, JWT, "Pr0xyPass", "pg-Secret-1", "at-1", "deep-1", "rt-1"):
        assert secret not in text, secret
        assert m(secret) in text, secret
    assert out["connections"] == workflow["connections"]
    assert out["nodes"][1]["credentials"] == workflow["nodes"][1]["credentials"]
    assert [n["name"] for n in out["nodes"]] == ["Code", "HTTP", "Postgres"]


def test_variables_are_sanitized() -> None:
    variables = {"API_BASE": "https://api.example.com", "STRIPE_SECRET": STRIPE, "DEBUG": "1"}
    out = S.sanitize(variables)
    assert out == {"API_BASE": "https://api.example.com", "STRIPE_SECRET": m(STRIPE), "DEBUG": "1"}


# ---- structure-aware exceptions ------------------------------------------------------------------


def test_node_credential_references_are_kept() -> None:
    node = {
        "type": "n8n-nodes-base.ssh",
        "typeVersion": 1,
        "parameters": {},
        "credentials": {
            "sshPassword": {"id": "Cyjy61UWHwD2Xcd8", "name": "ssh host"},
            "nocoDbApiToken": {"id": "9uSbSrDz8EL2OIL7", "name": "NocoDB Token account"},
            "googleSheetsOAuth2Api": "google_sheets_oauth",
            "httpBasicAuth": "",
        },
    }
    assert S.sanitize(node) == node


def test_credential_data_inside_a_reference_is_replaced() -> None:
    node = {
        "type": "n8n-nodes-base.httpRequest",
        "parameters": {},
        "credentials": {"httpHeaderAuth": {"id": "1", "name": "h", "data": {"value": "v-1"}}},
    }
    out = S.sanitize(node)["credentials"]["httpHeaderAuth"]
    assert out == {"id": "1", "name": "h", "data": {"value": m("v-1")}}


def test_credentials_outside_a_node_follow_the_normal_rules() -> None:
    value = {"credentials": {"username": "bob", "password": "pw-1"}}
    assert S.sanitize(value) == {"credentials": {"username": "bob", "password": m("pw-1")}}


def test_node_names_are_labels_not_keys() -> None:
    value = {
        "connections": {"API KEY": {"main": [[{"node": "Token", "type": "main", "index": 0}]]}},
        "pinData": {"Get Password": [{"json": {"ok": True}}]},
        "runData": {"Secret": [{"startTime": 1, "data": {"main": [[{"json": {"a": "b"}}]]}}]},
    }
    assert S.sanitize(value) == value


# ---- trees: copies, idempotence, errors, markers ------------------------------------------------


def test_input_is_never_mutated_and_output_shares_no_container() -> None:
    value = {
        "password": "pw-1",
        "items": [{"jsCode": f"const k = '{OPENAI}'", "n": [1, 2]}],
        "nodes": [{"parameters": {"a": "b"}, "type": "t"}],
    }
    before = copy.deepcopy(value)
    for _ in range(3):  # the second and third calls are served from the memo
        out = S.sanitize(value)
        assert value == before

        def containers(v: Any) -> Iterator[int]:
            if isinstance(v, dict | list):
                yield id(v)
                for x in v.values() if isinstance(v, dict) else v:
                    yield from containers(x)

        assert not set(containers(out)) & set(containers(value))
        out["items"][0]["n"].append(3)
        assert value == before


def test_scalars_and_tuples() -> None:
    assert S.sanitize("plain text") == "plain text"
    assert S.sanitize(f"key {OPENAI}") == f"key {m(OPENAI)}"
    assert S.sanitize(42) == 42
    assert S.sanitize(None) is None
    assert S.sanitize(("a", {"token": "t"})) == ["a", {"token": m("t")}]


@pytest.mark.parametrize("bad", [{"a": {1, 2}}, {"a": b"bytes"}, [object()], {1: "x"}])
def test_non_json_values_are_refused(bad: Any) -> None:
    with pytest.raises(SanitizationError):
        S.sanitize(bad)


def test_deep_nesting_is_refused() -> None:
    value: Any = "x"
    for _ in range(5000):
        value = [value]
    with pytest.raises(SanitizationError):
        S.sanitize({"a": value})


def test_markers_are_never_replaced_again() -> None:
    marker = m("whatever")
    value = {
        "password": marker,
        "text": f"Authorization: Bearer {marker}",
        "url": f"postgres://u:{marker}@h/db",
        "code": f'const apiKey = "{marker}";',
        "pair": [{"name": "token", "value": f"Bearer {marker}"}],
    }
    assert S.sanitize(value) == value


def test_find_markers_and_contains_marker() -> None:
    out = S.sanitize(
        {"a": {"password": "x", "b/c": ["ok", f"token={OPENAI}"]}, "n": [{"secret": None}]}
    )
    assert find_markers(out) == ["/a/password", "/a/b~1c/1"]
    assert contains_marker(out)
    assert not contains_marker({"a": ["b", 1, None]})
    assert find_markers("plain") == []


def test_sanitize_text_and_redact_value() -> None:
    assert S.sanitize_text(f"x {GOOGLE} y") == f"x {m(GOOGLE)} y"
    assert S.redact_value({"a": "b", "n": 1}) == {"a": m("b"), "n": 1}
    assert S.redact_value(7) == m("7")


def test_memo_does_not_change_results() -> None:
    value = {"nodes": [{"parameters": {"jsCode": f"k='{OPENAI}'", "password": "p"}, "type": "x"}]}
    cached = Sanitizer(KEY)
    uncached = Sanitizer(KEY, cache_bytes=0)
    first = cached.sanitize(value)
    assert cached.sanitize(value) == first == uncached.sanitize(value)
    cached.clear_cache()
    assert cached.sanitize(value) == first
    tiny = Sanitizer(KEY, cache_bytes=64)  # evicts constantly
    for _ in range(3):
        assert tiny.sanitize(value) == first


# ---- properties ----------------------------------------------------------------------------------

SECRETISH = st.sampled_from(
    [
        OPENAI,
        JWT,
        GOOGLE,
        TELEGRAM,
        "Bearer Zx81Kq02Lm93Vn",
        "Basic dXNlcjpwYXNz",
        "password=hunter22",
        '"apiKey": "abc123def456"',
        "postgres://u:pw@h/db",
        "Authorization: Bearer ",
        "Cookie: a=b; c=d",
        "-----BEGIN PRIVATE KEY-----\n" + PEM_BODY + "\n-----END PRIVATE KEY-----",
        "={{ $json.token }}",
        "{{",
        "}}",
        "=",
        "?key=",
        "&token=",
        "'",
        '"',
        "\\",
        "\\n",
        ":",
        " ",
        "\n",
        "<redacted:hmac-sha256:",
        m("x"),
        "****",
        "YOUR_API_KEY",
    ]
)
TEXT = st.lists(st.one_of(SECRETISH, st.text(max_size=12)), max_size=6).map("".join)
KEYS = st.one_of(
    st.sampled_from(
        [
            *("password", "apiKey", "token", "value", "name", "key", "Authorization"),
            *("credentials", "type", "parameters", "connections", "pinData", "maxTokens"),
            *("sessionKey", "jsKey"),
        ]
    ),
    st.text(max_size=8),
)
JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=False, allow_infinity=False),
        TEXT,
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25,
)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(JSON)
def test_idempotent(value: Any) -> None:
    once = S.sanitize(value)
    assert S.sanitize(once) == once
    assert Sanitizer(KEY, cache_bytes=0).sanitize(once) == once


@PROPERTY
@given(JSON)
def test_no_mutation_same_shape_and_cache_independent(value: Any) -> None:
    before = copy.deepcopy(value)
    out = S.sanitize(value)
    assert value == before
    assert Sanitizer(KEY, cache_bytes=0).sanitize(value) == out

    def shape(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: shape(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [shape(x) for x in v]
        return None

    assert shape(out) == shape(value)


@PROPERTY
@given(TEXT, st.sampled_from([OPENAI, GOOGLE, JWT, SLACK, GITHUB, TELEGRAM]))
def test_planted_provider_tokens_never_survive(prefix: str, token: str) -> None:
    for text in (f"{prefix} {token} {prefix}", f"{prefix}\n{token}\n"):
        out = S.sanitize({"notes": text, "list": [text], "pinData": {"N": [{"json": {"t": text}}]}})
        assert token not in dumped(out)


@PROPERTY
@given(st.text(min_size=1, max_size=30), KEYS)
def test_values_under_secret_keys_never_survive(secret: str, other: str) -> None:
    assume(other not in ("connections", "pinData", "runData"))  # keyed by node names
    out = S.sanitize({"password": secret, other: {"api_key": [secret]}})
    literal = MARKER_RE.sub("", secret.removeprefix("=")).strip()
    if literal and "{{" not in secret and not set(literal) <= set("*•·●"):
        assert out["password"] != secret
        assert all(secret not in s or MARKER_RE.search(s) for s in strings(out))


def test_subclasses_of_json_types_are_accepted() -> None:
    import enum
    from collections import OrderedDict

    class Kind(enum.StrEnum):
        A = "alpha"

    class Level(enum.IntEnum):
        HIGH = 3

    value = OrderedDict([("password", Kind.A), ("level", Level.HIGH), ("kind", Kind.A)])
    out = S.sanitize(value)
    assert out == {"password": m("alpha"), "level": 3, "kind": "alpha"}
    assert type(out) is dict and type(out["kind"]) is str and type(out["level"]) is int
    assert S.redact_value([Kind.A]) == [m("alpha")]


def test_the_memo_never_holds_a_secret() -> None:
    s = Sanitizer(KEY)
    secret = "pw-" + "9f8e7d6c5b4a"
    workflow = {
        "nodes": [
            {"parameters": {"jsCode": f"const password = '{secret}';", "token": secret}},
            {"parameters": {"url": f"https://x.example.com/?api_key={secret}"}},
        ],
        "pinData": {"N": [{"json": {"note": f"Bearer {secret}"}}]},
    }
    for _ in range(2):
        s.sanitize(workflow)
    held = [*s._memo, *s._memo.values()]
    for memo in s._chunks:
        held += [k.hex() for k in memo] + [v.decode() for v, _ in memo.values()]
    assert held
    assert not [h for h in held if secret in h]


# ---- numbers for canonicalize (sanitize_json, sanitize_nodes) -------------------------------------

NUMBERS = st.recursive(
    st.one_of(
        st.none(),
        st.sampled_from([1.0, -0.0, 4.2, 1e16, 1e-7, 2**53, 2**53 + 1, -(2**60), 7]),
        st.floats(allow_nan=False, allow_infinity=False),
        TEXT,
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=25,
)


def numbers_of(value: Any) -> int:
    """The OR of number_flags over the numbers of a (sanitized) tree."""
    if isinstance(value, dict):
        return functools.reduce(operator.or_, map(numbers_of, value.values()), 0)
    if isinstance(value, list):
        return functools.reduce(operator.or_, map(numbers_of, value), 0)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return number_flags(value)
    return 0


@PROPERTY
@given(NUMBERS)
def test_sanitize_json_reports_the_numbers_it_keeps(value: Any) -> None:
    tree = {"a": [value], "b": {"c": value}}
    cached = Sanitizer(KEY)
    for sanitizer in (cached, cached, Sanitizer(KEY, cache_bytes=0)):  # cold, warm, no memo
        out, numbers = sanitizer.sanitize_json(tree)
        assert out == S.sanitize(tree)
        assert numbers == numbers_of(out)


@PROPERTY
@given(st.lists(NUMBERS, min_size=1, max_size=3), st.sampled_from([1, 2.5, 1.0, 2**60]))
def test_sanitize_nodes_keeps_identity_and_reports_numbers(params: list[Any], version: Any) -> None:
    nodes = [
        {
            "id": f"n{i}",
            "name": f"Node {i}",
            "type": "n8n-nodes-base.set",
            "typeVersion": version,
            "position": [i, version],
            "credentials": {"httpHeaderAuth": {"id": "7", "name": "token=abcdef123456"}},
            "parameters": {"p": p, "password": "hunter2"},
        }
        for i, p in enumerate(params)
    ]
    cached = Sanitizer(KEY)
    # cold, first hit, later hit (a node left unchanged is serialized on its first hit), no memo
    for sanitizer in (cached, cached, cached, Sanitizer(KEY, cache_bytes=0)):
        out, numbers = sanitizer.sanitize_nodes(nodes)
        assert numbers == numbers_of(out)
        for node, clean in zip(nodes, out, strict=True):
            assert list(clean) == list(node)  # the node's key order
            assert {k: clean[k] for k in NODE_KEPT_KEYS if k in node} == {
                k: node[k] for k in NODE_KEPT_KEYS if k in node
            }
            assert clean["parameters"] == S.sanitize(node["parameters"])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_with_their_path_memo_or_not(bad: float) -> None:
    s = Sanitizer(KEY)
    twin = [{"name": "A", "type": "t", "parameters": {"x": [1, None]}}]
    nodes = [{"name": "A", "type": "t", "parameters": {"x": [1, bad]}}]
    for _ in range(2):  # the twin with null has the same orjson bytes: it must not be mistaken
        assert s.sanitize_nodes(twin)[0] == twin
        with pytest.raises(InvalidInput, match="NaN") as err:
            s.sanitize_nodes(nodes)
        assert err.value.field == "nodes[0].parameters.x[1]"
    with pytest.raises(InvalidInput) as err:
        s.sanitize_nodes([{"name": "A", "type": "t", "webhookId": bad, "parameters": {}}])
    assert err.value.field == "nodes[0].webhookId"
    for _ in range(2):
        assert s.sanitize_json({"n": [{"k": None}]}) == ({"n": [{"k": None}]}, 0)
        with pytest.raises(InvalidInput) as err:
            s.sanitize_json({"n": [{"k": bad}]}, where="settings")
        assert err.value.field == "settings.n[0].k"
        # sanitize() keeps them (canonicalize refuses them later), memo or not ...
        assert math.isnan(s.sanitize({"n": [{"k": math.nan}]})["n"][0]["k"])
        # ... and under a secret key they are replaced like any number
        out = s.sanitize({"n": [{"password": bad}]})
        assert out == {"n": [{"password": s.marker(repr(bad))}]}
        assert s.sanitize({"n": [{"password": None}]}) == {"n": [{"password": None}]}


def test_values_orjson_prints_but_the_walk_refuses_are_refused_memo_or_not() -> None:
    import datetime

    s = Sanitizer(KEY)
    when = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    assert s.sanitize({"n": [{"at": when.isoformat()}]})
    with pytest.raises(SanitizationError):
        s.sanitize({"n": [{"at": when}]})


def test_a_caller_mutating_a_result_does_not_change_later_results() -> None:
    s = Sanitizer(KEY)
    nodes = [
        {"name": "A", "type": "t", "parameters": {"url": "https://x.example", "password": "p"}},
        {"name": "B", "type": "t", "parameters": {"url": "https://y.example", "n": [1, 2.5]}},
    ]
    first = copy.deepcopy(s.sanitize_nodes(nodes)[0])
    assert first[1] == nodes[1]  # nothing to sanitize in B
    second = s.sanitize_nodes(nodes)[0]  # from the memo
    assert second == first
    for node in second:
        node["parameters"]["url"] = "https://evil.example"
        node["parameters"]["password"] = "hunter2"
        node["parameters"]["n"] = [3]
    assert nodes[1]["parameters"] == {"url": "https://y.example", "n": [1, 2.5]}
    assert s.sanitize_nodes(nodes)[0] == first
    assert s.sanitize_nodes(nodes)[0] == first


# ---- the prefilter ------------------------------------------------------------------------------

PREFILTER_BITS = st.sampled_from(
    [
        *("private key", "eyJabcdefghij.eyJ", "sk-", "sk_live_", "rk_test_", "whsec_", "xoxb-"),
        *("xapp-1-", "xkeysib-", "ghp_", "github_pat_", "glpat-", "AKIA", "ASIA", "AIza", "hf_"),
        *("SG.", "shpat_", "npm_", "pypi-AgE", "key-", "n8n_api_", ":AA", "hooks.slack.com/"),
        *("hook.", "/api/webhooks/1", "ipqualityscore.com/api/", "Bearer ", "basic\t", "://u:p@"),
        *("password", "pwd", "secret", "token", "key", "Authorization", "cookie", "bearer"),
        *("0123456789abcdef", "aaaaaaaaaaaaaaaa", "=", ":", '"', "'", "\\", "]", " ", "\t", "-"),
        *("_", ".", "/", "@", "\x00", "é", "\n"),
        *("key-" + "0123456789abcdef" * 2, "123456789:AA" + "x" * 30, "AKIA" + "A" * 16),
        *("hf_" + "a" * 30, "npm_" + "b" * 36, "AIza" + "c" * 35, "SG." + "d" * 16),
    ]
)
PREFILTER_TEXT = st.lists(st.one_of(PREFILTER_BITS, st.text(max_size=6)), max_size=10).map("".join)


def prefilter_reference(strings: list[str]) -> dict[int, int]:
    """The prefilter's definition: the families of every pattern that occurs in each string."""
    found: dict[int, int] = {}
    for i, s in enumerate(strings):
        text = s.encode("utf-8", "surrogatepass").lower()
        families = 0
        for family, pattern in sanitize_module._PREFILTER:
            if pattern.search(text):
                families |= family
        if families:
            found[i] = families
    return found


@PROPERTY
@given(st.lists(PREFILTER_TEXT, min_size=1, max_size=6))
def test_prefilter_finds_every_family_of_every_string(strings: list[str]) -> None:
    assert sanitize_module._prefilter(strings) == prefilter_reference(strings)


@pytest.mark.parametrize(
    "strings",
    [
        # a group's first match is one family, a later one (same first byte) another
        ["apiKey: 1 then key-" + "0123456789abcdef" * 2],
        ["key-" + "0123456789abcdef" * 2 + ' and "key": 1'],
        ["bearer: x; Bearer abc", "basic"],
        ["pass= pypi-AgE private key", "short", ":AA" + "b" * 30 + " ://u:p@h"],
        ["secret: sk-abc", "sk-x secret=1", "token", "hook.x hf_" + "a" * 30],
    ],
)
def test_prefilter_finds_later_families_of_a_group(strings: list[str]) -> None:
    assert sanitize_module._prefilter(strings) == prefilter_reference(strings)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_twin_with_nan_is_told_apart_on_every_hit_not_only_the_first(bad: float) -> None:
    """The memo notes where a chunk's nulls are on its first hit and later looks only there."""
    s = Sanitizer(KEY)

    def doc(x: Any) -> dict[str, Any]:
        return {"n": [{"a": None, "b": [1, {"c": x}], "token": "t0k3n-value", "d": [None, None]}]}

    for _ in range(5):  # stored, two hits compared whole (paths noted), later hits (null paths)
        assert s.sanitize(doc(None)) == {
            "n": [
                {
                    "a": None,
                    "b": [1, {"c": None}],
                    "token": s.marker("t0k3n-value"),
                    "d": [None, None],
                }
            ]
        }
        assert math.isnan(s.sanitize(doc(math.nan))["n"][0]["b"][1]["c"])
        with pytest.raises(InvalidInput) as err:
            s.sanitize_json(doc(bad), where="v")
        assert err.value.field == "v.n[0].b[1].c"
        # a tuple prints like a list: a hit gives the walk's answer (lists)
        assert s.sanitize({"n": ({"a": None, "b": (1, {"c": None})},)}) == {
            "n": [{"a": None, "b": [1, {"c": None}]}]
        }


def test_a_chunk_with_many_nulls_is_compared_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Sanitizer(KEY)
    nulls: list[Any] = [None] * 100
    for _ in range(3):
        assert s.sanitize({"n": list(nulls)}) == {"n": nulls}
        assert math.isnan(s.sanitize({"n": [*nulls[:99], math.nan]})["n"][99])
    assert None in s._nulls.values()  # more than _MAX_NULL_PATHS: no paths kept


def test_a_warm_hit_on_a_chunk_with_nulls_parses_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The NaN-twin check of a warm hit costs lookups, not a second parse and a deep compare
    (benchmarks/sanitize_bench.py: warm p50 1.4 ms with them, 0.8 without)."""
    s = Sanitizer(KEY)
    doc = {"nodes": [{"parameters": {"a": None, "token": "t0k3n-value"}, "b": [None, 2]}]}
    want = {
        "nodes": [{"parameters": {"a": None, "token": s.marker("t0k3n-value")}, "b": [None, 2]}]
    }
    for _ in range(3):  # stored, then its two hits compared whole
        assert s.sanitize(doc) == want
    parsed: list[bytes] = []
    loads = sanitize_module._loads

    def counting(data: bytes) -> Any:
        parsed.append(data)
        return loads(data)

    monkeypatch.setattr(sanitize_module, "_loads", counting)
    assert s.sanitize(doc) == want
    assert len(parsed) == 1  # the memoised result only
    # a "null" inside a string (JavaScript code) is no null value: no check at all
    assert not sanitize_module._has_null(orjson.dumps({"js": "if (x !== null) return x"}))
    for value in ({"a": None}, [None], [1, None]):
        assert sanitize_module._has_null(orjson.dumps(value))
