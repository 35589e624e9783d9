"""Cookie header parsing and session cookie lookup (credentials/cookies.py)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from illumichat_authz.credentials.cookies import (
    MAX_CHUNKS,
    MAX_COOKIE_HEADER_CHARS,
    MAX_COOKIES,
    SessionCookie,
    find_session_cookie,
    parse_cookie_header,
)
from illumichat_authz.errors import CredentialError
from illumichat_authz.reasons import Reason

NAMES = ("authjs.session-token", "__Secure-authjs.session-token")


def find(*headers: str) -> SessionCookie | None:
    return find_session_cookie(parse_cookie_header(headers), NAMES)


def test_parse_is_lenient_like_browsers() -> None:
    pairs = parse_cookie_header(['a=1;  b = "two" ;novalue; =x; c=3=4', "d=5"])
    assert pairs == [("a", "1"), ("b", "two"), ("c", "3=4"), ("d", "5")]


def test_absent() -> None:
    assert find() is None
    assert find("") is None
    assert find("other=1; authjs.session-tokenish=2") is None


def test_plain_and_secure_names_are_kept_exactly() -> None:
    assert find("x=1; authjs.session-token=abc") == SessionCookie(
        name="authjs.session-token", value="abc"
    )
    found = find("__Secure-authjs.session-token=abc")
    assert found is not None
    assert found.name == "__Secure-authjs.session-token"


def test_chunks_are_joined_in_index_order() -> None:
    header = "; ".join(f"authjs.session-token.{i}=p{i}" for i in (2, 0, 10, 1, 3, 4, 5, 6, 7, 8, 9))
    found = find(header)
    assert found is not None
    assert found.name == "authjs.session-token"
    assert found.value == "".join(f"p{i}" for i in range(11))
    assert found.chunks == 11


def test_chunks_across_several_header_values() -> None:
    found = find("authjs.session-token.1=b", "authjs.session-token.0=a")
    assert found is not None
    assert found.value == "ab"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("authjs.session-token=a; authjs.session-token=b", Reason.AMBIGUOUS_CREDENTIAL),
        ("authjs.session-token=a; __Secure-authjs.session-token=b", Reason.AMBIGUOUS_CREDENTIAL),
        ("authjs.session-token=a; authjs.session-token.0=b", Reason.AMBIGUOUS_CREDENTIAL),
        ("authjs.session-token.0=a; authjs.session-token.0=b", Reason.AMBIGUOUS_CREDENTIAL),
        (
            "authjs.session-token.0=a; __Secure-authjs.session-token.0=b",
            Reason.AMBIGUOUS_CREDENTIAL,
        ),
        ("authjs.session-token.0=a; authjs.session-token.2=c", Reason.INVALID_CREDENTIAL),
        ("authjs.session-token.1=a", Reason.INVALID_CREDENTIAL),
        ("authjs.session-token.01=a", Reason.INVALID_CREDENTIAL),
        ("authjs.session-token.x=a", Reason.INVALID_CREDENTIAL),
        ("authjs.session-token.=a", Reason.INVALID_CREDENTIAL),
        ("authjs.session-token.-1=a", Reason.INVALID_CREDENTIAL),
        ("authjs.session-token.100=a", Reason.INVALID_CREDENTIAL),
        ("authjs.session-token.\u0661=a", Reason.INVALID_CREDENTIAL),  # Arabic-Indic one
        ("authjs.session-token=%ff", Reason.INVALID_CREDENTIAL),
    ],
)
def test_bad_cookie_sets(header: str, reason: Reason) -> None:
    with pytest.raises(CredentialError) as info:
        find(header)
    assert info.value.reason is reason
    assert info.value.status == 401


def test_empty_value_is_a_cleared_cookie() -> None:
    assert find("authjs.session-token=") is None
    found = find("authjs.session-token=; __Secure-authjs.session-token=v")
    assert found is not None
    assert found.value == "v"


def test_percent_encoded_value_is_decoded() -> None:
    found = find("authjs.session-token=a%2Eb")
    assert found is not None
    assert found.value == "a.b"


def test_bounds() -> None:
    with pytest.raises(CredentialError, match="too large"):
        find("a=" + "x" * MAX_COOKIE_HEADER_CHARS)
    with pytest.raises(CredentialError, match="too many cookies"):
        find(";".join(f"c{i}=1" for i in range(MAX_COOKIES + 1)))
    with pytest.raises(CredentialError, match="too many session cookie chunks"):
        find(";".join(f"authjs.session-token.{i}=1" for i in range(MAX_CHUNKS + 1)))
    # Thousands of chunk cookies never get as far as sorting: the count cap comes first.
    with pytest.raises(CredentialError):
        find(";".join(f"authjs.session-token.{i}=1" for i in range(5000)))


def test_repr_hides_the_value() -> None:
    cookie = SessionCookie(name="authjs.session-token", value="secret-token-bytes")
    assert "secret-token-bytes" not in repr(cookie)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=300), max_size=4))
def test_fuzz_parser_only_raises_credential_error(headers: list[str]) -> None:
    with contextlib.suppress(CredentialError):
        find(*headers)


_name = st.sampled_from(
    [*NAMES, *(f"{n}.{i}" for n in NAMES for i in ("0", "1", "2", "00", "x")), "other"]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_name, st.text(alphabet='ab.%=;" ', max_size=8)), max_size=12))
def test_fuzz_structured_cookie_sets(pairs: list[tuple[str, str]]) -> None:
    header = "; ".join(f"{n}={v}" for n, v in pairs)
    try:
        found = find(header)
    except CredentialError as exc:
        status = exc.status
    else:
        status = 0
        assert found is None or found.name in NAMES
    assert status in (0, 401)
