"""TwilioSignatureVerifier against Twilio's own ``twilio.request_validator.RequestValidator``.

Every signature here is computed by the ``twilio`` package; the verifier must accept
exactly what ``RequestValidator.validate`` accepts (with the documented, stricter
exception for non-default ports).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from illumichat_authz.config import TwilioSettings
from illumichat_authz.credentials.twilio import (
    MAX_FORM_FIELDS,
    SignatureAlgorithm,
    TwilioSignatureVerifier,
    parse_form,
)
from illumichat_authz.errors import ConfigurationError, SignatureError
from illumichat_authz.reasons import Reason

pytestmark = pytest.mark.interop

TOKEN = "12345678901234567890123456789012"
OLD_TOKEN = "abcdefabcdefabcdefabcdefabcdefab"
OTHER_TOKEN = "ffffffffffffffffffffffffffffffff"
ASSISTANT_TOKEN = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
URL = "https://api.illumichat.test/api/sms/webhook/asst_1"
FORM = "application/x-www-form-urlencoded"

SMS: list[tuple[str, str]] = [
    ("ToCountry", "US"),
    ("SmsMessageSid", "SM1f0e2c3d4b5a69788796a5b4c3d2e1f0"),
    ("NumMedia", "0"),
    ("From", "+15551234567"),
    ("To", "+15557654321"),
    ("Body", "Héllo 👋 wörld & a=b?c+d%20 ünïcødé"),
    ("MessageSid", "SM1f0e2c3d4b5a69788796a5b4c3d2e1f0"),
    ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
    ("ApiVersion", "2010-04-01"),
]


class MultiParams:
    """A Flask-``MultiDict``-like view, so Twilio's validator sees repeated names."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._pairs = list(pairs)

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self._pairs])

    def __len__(self) -> int:
        return len(self._pairs)

    def getall(self, name: str) -> list[str]:
        return [value for n, value in self._pairs if n == name]


def twilio_sign(url: str, pairs: Sequence[tuple[str, str]], token: str = TOKEN) -> str:
    sig: str = RequestValidator(token).compute_signature(url, MultiParams(pairs))
    return sig


def twilio_accepts(
    url: str, pairs: Sequence[tuple[str, str]], sig: str, token: str = TOKEN
) -> bool:
    return bool(RequestValidator(token).validate(url, MultiParams(pairs), sig))


def verifier(**kwargs: object) -> TwilioSignatureVerifier:
    kwargs.setdefault("default_tokens", [TOKEN])
    return TwilioSignatureVerifier(**kwargs)  # type: ignore[arg-type]


def ours_accepts(
    v: TwilioSignatureVerifier,
    url: str,
    body: bytes,
    sig: str | None,
    *,
    content_type: str | None = FORM,
    assistant_id: str | None = "asst_1",
) -> bool:
    try:
        v.verify(
            assistant_id=assistant_id, url=url, signature=sig, body=body, content_type=content_type
        )
    except SignatureError as exc:
        error = exc
    else:
        return True
    assert error.status == 403
    assert error.reason is Reason.INVALID_SIGNATURE
    return False


def form(pairs: Sequence[tuple[str, str]]) -> bytes:
    return urlencode(list(pairs)).encode("ascii")


# -- form webhooks -------------------------------------------------------------------


def test_inbound_sms_signed_by_twilio_is_accepted() -> None:
    sig = twilio_sign(URL, SMS)
    assert twilio_accepts(URL, SMS, sig)
    assert ours_accepts(verifier(), URL, form(SMS), sig)


def test_content_type_parameters_are_ignored() -> None:
    sig = twilio_sign(URL, SMS)
    ct = "Application/X-WWW-Form-Urlencoded; charset=utf-8"
    assert ours_accepts(verifier(), URL, form(SMS), sig, content_type=ct)


def test_param_order_in_body_does_not_matter() -> None:
    sig = twilio_sign(URL, SMS)
    shuffled = list(SMS)
    random.Random(7).shuffle(shuffled)
    assert shuffled != SMS
    assert twilio_accepts(URL, shuffled, sig)
    assert ours_accepts(verifier(), URL, form(shuffled), sig)


def test_url_with_query_string() -> None:
    url = URL + "?channel=sms&x=%2F"
    sig = twilio_sign(url, SMS)
    assert ours_accepts(verifier(), url, form(SMS), sig)
    assert not ours_accepts(verifier(), URL, form(SMS), sig)


@pytest.mark.parametrize(
    "request_url",
    [
        "https://api.illumichat.test/api/sms/webhook/asst_2",  # another assistant's URL
        "https://api.illumichat.test/api/sms/status/asst_1",  # another route
        "https://evil.test/api/sms/webhook/asst_1",  # another host
        "http://api.illumichat.test/api/sms/webhook/asst_1",  # http instead of https
        "https://api.illumichat.test/api/sms/webhook/asst_1?x=1",  # added query
        "https://api.illumichat.test/api/sms/webhook/asst_1/",  # trailing slash
    ],
)
def test_wrong_url_is_rejected_like_twilio(request_url: str) -> None:
    sig = twilio_sign(URL, SMS)
    assert not twilio_accepts(request_url, SMS, sig)
    assert not ours_accepts(verifier(), request_url, form(SMS), sig)


@pytest.mark.parametrize(
    ("signed_url", "request_url"),
    [
        (URL, "https://api.illumichat.test:443/api/sms/webhook/asst_1"),
        ("https://api.illumichat.test:443/api/sms/webhook/asst_1", URL),
        ("http://api.illumichat.test/x", "http://api.illumichat.test:80/x"),
        ("http://api.illumichat.test:80/x", "http://api.illumichat.test/x"),
        ("https://api.illumichat.test:8443/x", "https://api.illumichat.test:8443/x"),
    ],
)
def test_default_port_both_ways_like_twilio(signed_url: str, request_url: str) -> None:
    sig = twilio_sign(signed_url, SMS)
    assert twilio_accepts(request_url, SMS, sig)
    assert ours_accepts(verifier(), request_url, form(SMS), sig)


@pytest.mark.parametrize(
    ("signed_url", "request_url"),
    [
        ("https://api.illumichat.test:8443/x", "https://api.illumichat.test:9443/x"),
        ("https://api.illumichat.test:443/x", "https://api.illumichat.test:80/x"),
        ("http://api.illumichat.test:80/x", "http://api.illumichat.test:443/x"),
        ("https://api.illumichat.test/x", "http://api.illumichat.test:443/x"),
    ],
)
def test_wrong_port_is_rejected_like_twilio(signed_url: str, request_url: str) -> None:
    sig = twilio_sign(signed_url, SMS)
    assert not twilio_accepts(request_url, SMS, sig)
    assert not ours_accepts(verifier(), request_url, form(SMS), sig)


def test_ipv6_literal_default_port() -> None:
    """Twilio's ``remove_port`` splits the netloc at the first ':' and so mangles IPv6
    literals; we keep the brackets and handle the default port the same way."""
    sig = twilio_sign("https://[2001:db8::1]/x", SMS)
    assert ours_accepts(verifier(), "https://[2001:db8::1]:443/x", form(SMS), sig)
    assert ours_accepts(verifier(), "https://[2001:db8::1]/x", form(SMS), sig)
    assert not ours_accepts(verifier(), "https://[2001:db8::1]:8443/x", form(SMS), sig)


def test_non_default_port_is_not_stripped_stricter_than_twilio() -> None:
    """Twilio's validator strips *any* port; we only add/remove :443 / :80 (documented)."""
    sig = twilio_sign("https://api.illumichat.test/x", SMS)
    request_url = "https://api.illumichat.test:8443/x"
    assert twilio_accepts(request_url, SMS, sig)
    assert not ours_accepts(verifier(), request_url, form(SMS), sig)


def test_changed_param_value_is_rejected() -> None:
    sig = twilio_sign(URL, SMS)
    tampered = [(n, "+15550000000" if n == "From" else v) for n, v in SMS]
    assert not twilio_accepts(URL, tampered, sig)
    assert not ours_accepts(verifier(), URL, form(tampered), sig)


def test_added_or_removed_param_is_rejected() -> None:
    sig = twilio_sign(URL, SMS)
    for pairs in (SMS[1:], [*SMS, ("Extra", "1")]):
        assert not twilio_accepts(URL, pairs, sig)
        assert not ours_accepts(verifier(), URL, form(pairs), sig)


def test_repeated_params_follow_twilio() -> None:
    pairs = [*SMS, ("MediaUrl0", "https://m/b"), ("MediaUrl0", "https://m/a")]
    sig = twilio_sign(URL, pairs)
    assert ours_accepts(verifier(), URL, form(pairs), sig)
    # Twilio signs each distinct value once, sorted: a duplicate and a reorder change nothing.
    again = [*pairs, ("MediaUrl0", "https://m/a")]
    assert twilio_accepts(URL, again, sig)
    assert ours_accepts(verifier(), URL, form(again), sig)
    # ... but a different value does.
    other = [*SMS, ("MediaUrl0", "https://m/b"), ("MediaUrl0", "https://m/c")]
    assert not twilio_accepts(URL, other, sig)
    assert not ours_accepts(verifier(), URL, form(other), sig)


def test_empty_form_body_signs_the_url_only() -> None:
    sig = twilio_sign(URL, [])
    assert twilio_accepts(URL, [], sig)
    assert ours_accepts(verifier(), URL, b"", sig)
    assert ours_accepts(verifier(), URL, b"", sig, content_type=None)


def test_blank_values_are_signed() -> None:
    pairs = [("Body", ""), ("From", "+1")]
    sig = twilio_sign(URL, pairs)
    assert ours_accepts(verifier(), URL, form(pairs), sig)


# -- tokens --------------------------------------------------------------------------


def test_rotated_token_old_and_new_both_verify() -> None:
    v = verifier(default_tokens=[TOKEN, OLD_TOKEN])
    assert ours_accepts(v, URL, form(SMS), twilio_sign(URL, SMS, TOKEN))
    assert ours_accepts(v, URL, form(SMS), twilio_sign(URL, SMS, OLD_TOKEN))
    assert not ours_accepts(v, URL, form(SMS), twilio_sign(URL, SMS, OTHER_TOKEN))


def test_per_assistant_tokens_replace_the_default() -> None:
    v = verifier(default_tokens=[TOKEN], assistant_tokens={"asst_1": [ASSISTANT_TOKEN]})
    body = form(SMS)
    own = twilio_sign(URL, SMS, ASSISTANT_TOKEN)
    default = twilio_sign(URL, SMS, TOKEN)
    assert ours_accepts(v, URL, body, own, assistant_id="asst_1")
    assert not ours_accepts(v, URL, body, default, assistant_id="asst_1")
    assert ours_accepts(v, URL, body, default, assistant_id="asst_2")
    assert not ours_accepts(v, URL, body, own, assistant_id="asst_2")
    assert ours_accepts(v, URL, body, default, assistant_id=None)


def test_missing_signature_and_missing_token_have_distinct_messages() -> None:
    msgs = set()
    with pytest.raises(SignatureError) as missing:
        verifier().verify(assistant_id="a", url=URL, signature=None, body=b"", content_type=FORM)
    msgs.add(missing.value.message)
    with pytest.raises(SignatureError) as empty:
        verifier().verify(assistant_id="a", url=URL, signature="", body=b"", content_type=FORM)
    assert empty.value.message == missing.value.message
    no_token = TwilioSignatureVerifier(default_tokens=[], assistant_tokens={"b": [TOKEN]})
    with pytest.raises(SignatureError) as unconfigured:
        no_token.verify(
            assistant_id="a", url=URL, signature=twilio_sign(URL, []), body=b"", content_type=FORM
        )
    msgs.add(unconfigured.value.message)
    with pytest.raises(SignatureError) as wrong:
        verifier().verify(
            assistant_id="a", url=URL, signature="x" * 28, body=form(SMS), content_type=FORM
        )
    msgs.add(wrong.value.message)
    assert len(msgs) == 3
    for exc in (missing.value, unconfigured.value, wrong.value):
        assert exc.status == 403
        assert exc.reason is Reason.INVALID_SIGNATURE


def test_messages_never_contain_secrets() -> None:
    sig = twilio_sign(URL, SMS, OTHER_TOKEN)
    with pytest.raises(SignatureError) as info:
        verifier().verify(
            assistant_id="a", url=URL, signature=sig, body=form(SMS), content_type=FORM
        )
    text = str(info.value) + repr(info.value)
    assert TOKEN not in text
    assert sig not in text
    assert "+15551234567" not in text


# -- JSON bodies (bodySHA256) --------------------------------------------------------


def _json_case() -> tuple[str, bytes, str]:
    body = json.dumps({"MessageSid": "SM1", "Body": "héllo", "n": [1, 2]}).encode("utf-8")
    url = f"{URL}?bodySHA256={hashlib.sha256(body).hexdigest()}"
    return url, body, RequestValidator(TOKEN).compute_signature(url, {})


def test_json_body_with_body_sha256_like_twilio() -> None:
    url, body, sig = _json_case()
    assert RequestValidator(TOKEN).validate(url, body.decode("utf-8"), sig)
    assert ours_accepts(verifier(), url, body, sig, content_type="application/json")


def test_json_body_changed_is_rejected() -> None:
    url, body, sig = _json_case()
    changed = body.replace(b"SM1", b"SM2")
    assert not RequestValidator(TOKEN).validate(url, changed.decode("utf-8"), sig)
    assert not ours_accepts(verifier(), url, changed, sig, content_type="application/json")


def test_json_body_hash_param_changed_is_rejected() -> None:
    _, _, sig = _json_case()
    other = f"{URL}?bodySHA256={hashlib.sha256(b'x').hexdigest()}"
    assert not RequestValidator(TOKEN).validate(other, "x", sig)
    assert not ours_accepts(verifier(), other, b"x", sig, content_type="application/json")


def test_json_body_without_body_sha256_is_rejected() -> None:
    body = b'{"a": 1}'
    sig = RequestValidator(TOKEN).compute_signature(URL, {})
    assert not ours_accepts(verifier(), URL, body, sig, content_type="application/json")
    assert not ours_accepts(verifier(), URL, body, sig, content_type=None)


def test_json_body_with_two_body_hashes_is_rejected() -> None:
    body = b'{"a": 1}'
    digest = hashlib.sha256(body).hexdigest()
    url = f"{URL}?bodySHA256={digest}&bodySHA256={digest}"
    sig = RequestValidator(TOKEN).compute_signature(url, {})
    assert not ours_accepts(verifier(), url, body, sig, content_type="application/json")


# -- algorithm -----------------------------------------------------------------------


def test_hmac_sha256_signatures() -> None:
    sig = RequestValidator(TOKEN).compute_signature(URL, MultiParams(SMS), "HMAC_SHA256")
    assert RequestValidator(TOKEN).validate(URL, MultiParams(SMS), sig, "HMAC_SHA256")
    assert ours_accepts(verifier(algorithm="sha256"), URL, form(SMS), sig)
    assert not ours_accepts(verifier(algorithm="sha1"), URL, form(SMS), sig)
    assert not ours_accepts(verifier(algorithm="sha256"), URL, form(SMS), twilio_sign(URL, SMS))
    assert verifier(algorithm=SignatureAlgorithm.HMAC_SHA256).algorithm == "sha256"


# -- configuration -------------------------------------------------------------------


def test_from_settings() -> None:
    s = TwilioSettings(
        auth_tokens=[TOKEN], assistants={"asst_9": [ASSISTANT_TOKEN]}, algorithm="sha1"
    )
    v = TwilioSignatureVerifier.from_settings(s)
    assert ours_accepts(v, URL, form(SMS), twilio_sign(URL, SMS))
    assert ours_accepts(
        v, URL, form(SMS), twilio_sign(URL, SMS, ASSISTANT_TOKEN), assistant_id="asst_9"
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"default_tokens": [""]},
        {"default_tokens": ["  "]},
        {"default_tokens": TOKEN},
        {"assistant_tokens": {"a": [""]}},
        {"algorithm": "md5"},
        {"max_body_bytes": 0},
    ],
)
def test_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        verifier(**kwargs)


# -- strict, bounded parsing ---------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"Body=%zz",
        b"Body=%4",
        b"Body=abc%",
        b"Body=%FF%FE",  # not UTF-8 once decoded
        b"Body=\xff",  # raw non-UTF-8 byte
        b"Body",  # no '='
        b"Body=1&&From=2",  # empty field
        b"Body=1&",
        b"&".join([b"a=1"] * (MAX_FORM_FIELDS + 1)),
    ],
)
def test_malformed_form_is_an_invalid_signature(body: bytes) -> None:
    sig = twilio_sign(URL, SMS)
    with pytest.raises(SignatureError) as info:
        verifier().verify(assistant_id="a", url=URL, signature=sig, body=body, content_type=FORM)
    assert info.value.reason is Reason.INVALID_SIGNATURE


def test_oversized_inputs_are_rejected_before_hmac() -> None:
    v = verifier(max_body_bytes=1024)
    sig = twilio_sign(URL, SMS)
    cases = [
        {"url": URL, "signature": sig, "body": b"a=" + b"x" * 2000},
        {"url": URL + "?" + "x" * 9000, "signature": sig, "body": b""},
        {"url": URL, "signature": "A" * 500, "body": b""},
        {"url": URL, "signature": "sïg", "body": b""},
        {"url": "ftp://api.illumichat.test/x", "signature": sig, "body": b""},
        {"url": "not a url", "signature": sig, "body": b""},
    ]
    for case in cases:
        with pytest.raises(SignatureError):
            v.verify(assistant_id=None, content_type=FORM, **case)  # type: ignore[arg-type]


def test_parse_form_decodes_plus_and_percent() -> None:
    assert parse_form(b"a=1+2&b=%C3%A9&a=3&c=") == {
        "a": frozenset({"1 2", "3"}),
        "b": frozenset({"é"}),
        "c": frozenset({""}),
    }


# -- properties ----------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=12)
_pairs = st.lists(st.tuples(_text, _text), max_size=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=_pairs, tamper=st.sampled_from(["none", "token", "value", "drop"]))
def test_verdict_matches_twilio_validator(pairs: list[tuple[str, str]], tamper: str) -> None:
    """Over random parameter sets, our verdict equals ``RequestValidator.validate``."""
    sig = twilio_sign(URL, pairs, OTHER_TOKEN if tamper == "token" else TOKEN)
    sent = list(pairs)
    if tamper == "value" and sent:
        sent[0] = (sent[0][0], sent[0][1] + "x")
    if tamper == "drop" and sent:
        sent = sent[1:]
    expected = twilio_accepts(URL, sent, sig)
    assert ours_accepts(verifier(), URL, form(sent), sig) is expected
    if tamper == "none":
        assert expected


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300), ct=st.sampled_from([FORM, "application/json", None]))
def test_arbitrary_bodies_never_raise_anything_but_signature_error(
    body: bytes, ct: str | None
) -> None:
    with contextlib.suppress(SignatureError):
        verifier().verify(
            assistant_id="a", url=URL, signature=twilio_sign(URL, []), body=body, content_type=ct
        )


@settings(max_examples=200, deadline=None)
@given(
    url=st.one_of(st.text(max_size=80), st.text(max_size=40).map(lambda t: URL + t)),
    sig=st.one_of(st.none(), st.text(max_size=60)),
    assistant=st.one_of(st.none(), st.text(max_size=10)),
)
def test_arbitrary_urls_and_headers_never_raise_anything_but_signature_error(
    url: str, sig: str | None, assistant: str | None
) -> None:
    with contextlib.suppress(SignatureError):
        verifier().verify(
            assistant_id=assistant, url=url, signature=sig, body=b"", content_type="text/plain"
        )
