"""Random input at the parsers the other fuzz tests do not reach: each either answers or
raises its one documented error, never anything else (which would surface as a 500)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from illumichat_authz.credentials.jwk import parse_jwks
from illumichat_authz.credentials.sessions import check_session_token
from illumichat_authz.errors import BadRequestError, ConfigurationError, CredentialError
from illumichat_authz.net import parse_trusted, public_url
from illumichat_authz.ratelimit import RateLimitSpec
from illumichat_authz.stores.sessions import parse_expires

FUZZ = settings(max_examples=300, deadline=None)

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_jwk_like = st.fixed_dictionaries(
    {},
    optional={
        "kty": st.sampled_from(["RSA", "EC", "oct", "OKP", 3]),
        "kid": st.text(max_size=10) | st.integers(),
        "alg": st.sampled_from(["RS256", "ES256", "none", "HS256", ""]),
        "use": st.sampled_from(["sig", "enc", 1]),
        "n": st.text(max_size=30),
        "e": st.sampled_from(["AQAB", "", "===", "AA"]),
        "crv": st.sampled_from(["P-256", "P-384", "X25519", ""]),
        "x": st.text(max_size=30),
        "y": st.text(max_size=30),
    },
)


@FUZZ
@given(
    body=st.binary(max_size=300)
    | _json.map(lambda v: json.dumps(v).encode())
    | st.lists(_jwk_like, max_size=4).map(lambda keys: json.dumps({"keys": keys}).encode())
    | st.integers(1, 50_000).map(lambda n: b"[" * n)
)
def test_parse_jwks_answers_or_raises_value_error(body: bytes) -> None:
    try:
        keys = parse_jwks(body)
    except ValueError:
        return
    assert all(isinstance(kid, str) for kid in keys)


_header = st.tuples(
    st.sampled_from(["x-forwarded-proto", "x-forwarded-host", "x-forwarded-for", "host"]),
    st.text(max_size=30),
)


@FUZZ
@given(
    scheme=st.text(max_size=8) | st.sampled_from(["http", "https", "HTTPS"]),
    host=st.none() | st.text(max_size=40) | st.sampled_from(["api.example.com:443", "[::1]:80"]),
    path=st.text(max_size=40),
    query=st.text(max_size=20),
    headers=st.lists(_header, max_size=5),
    peer=st.none() | st.text(max_size=20) | st.sampled_from(["10.0.0.1", "203.0.113.9"]),
    base=st.none() | st.sampled_from(["https://api.example.com", "https://x.test/"]),
)
def test_public_url_answers_a_url_or_a_400(
    scheme: str,
    host: str | None,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    peer: str | None,
    base: str | None,
) -> None:
    trusted = parse_trusted(["10.0.0.0/8"])
    try:
        url = public_url(
            scheme=scheme,
            host_header=host,
            path=path,
            query=query,
            headers=headers,
            peer=peer,
            trusted=trusted,
            public_base_url=base,
        )
    except BadRequestError as exc:
        status = exc.status
    else:
        assert url.startswith(("http://", "https://"))
        return
    assert status == 400


@FUZZ
@given(token=st.text(max_size=300))
def test_check_session_token_accepts_or_refuses_with_a_401(token: str) -> None:
    try:
        check_session_token(token)
    except CredentialError as exc:
        status = exc.status
    else:
        return
    assert status == 401


@FUZZ
@given(
    value=st.text(max_size=45)
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.none()
    | st.dates().map(str)
    | st.datetimes().map(lambda d: d.isoformat())
)
def test_parse_expires_answers_seconds_or_raises_value_error(value: Any) -> None:
    try:
        seconds = parse_expires(value)
    except ValueError:
        return
    assert isinstance(seconds, float)


@FUZZ
@given(
    text=st.text(max_size=30) | st.sampled_from(["5/minute", "0/second", "10 per hour", "1/day"])
)
def test_rate_limit_spec_parses_or_is_a_configuration_error(text: str) -> None:
    try:
        spec = RateLimitSpec.parse(text)
    except ConfigurationError:
        return
    assert spec.amount >= 1
    assert spec.window_s >= 1
