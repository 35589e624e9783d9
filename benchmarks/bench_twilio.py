"""Twilio signature verification and rate-limit hits: median µs per call.

Run: ``.venv/bin/python benchmarks/bench_twilio.py [repetitions]``

Compares ``TwilioSignatureVerifier.verify`` (raw body in, strict parse, keyed-HMAC state
copied per message) with the naive alternative measured in the same run: parse the body
with ``urllib.parse.parse_qs`` and call ``twilio.request_validator.RequestValidator.validate``
(which re-keys the HMAC for each of its two URL variants).
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlencode

from twilio.request_validator import RequestValidator

from illumichat_authz.credentials.twilio import TwilioSignatureVerifier
from illumichat_authz.ratelimit import RateLimitSpec
from illumichat_authz.stores.ratelimit import RateLimiter

TOKEN = "12345678901234567890123456789012"
URL = "https://api.illumichat.test/api/sms/webhook/asst_1"
FORM = "application/x-www-form-urlencoded"
SMS = {
    "ToCountry": "US",
    "ToState": "CA",
    "SmsMessageSid": "SM1f0e2c3d4b5a69788796a5b4c3d2e1f0",
    "NumMedia": "0",
    "ToCity": "SAN FRANCISCO",
    "FromZip": "94105",
    "SmsSid": "SM1f0e2c3d4b5a69788796a5b4c3d2e1f0",
    "FromState": "CA",
    "SmsStatus": "received",
    "FromCity": "SAN FRANCISCO",
    "Body": "Héllo 👋 can I book a table for two tonight?",
    "FromCountry": "US",
    "To": "+15557654321",
    "ToZip": "94105",
    "NumSegments": "1",
    "MessageSid": "SM1f0e2c3d4b5a69788796a5b4c3d2e1f0",
    "AccountSid": "AC0123456789abcdef0123456789abcdef",
    "From": "+15551234567",
    "ApiVersion": "2010-04-01",
}


class _Multi(dict[str, list[str]]):
    def getall(self, name: str) -> list[str]:
        return self[name]


def median_us(fn: Callable[[], object], reps: int) -> float:
    for _ in range(min(1000, reps)):
        fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    body = urlencode(SMS).encode("ascii")
    validator = RequestValidator(TOKEN)
    sig = validator.compute_signature(URL, SMS)
    ours = TwilioSignatureVerifier(default_tokens=[TOKEN])
    rotated = TwilioSignatureVerifier(default_tokens=["f" * 32, TOKEN])

    def our_form() -> None:
        ours.verify(assistant_id="asst_1", url=URL, signature=sig, body=body, content_type=FORM)

    def our_form_rotated() -> None:
        rotated.verify(assistant_id="asst_1", url=URL, signature=sig, body=body, content_type=FORM)

    def naive_form() -> None:
        params = _Multi(parse_qs(body.decode("utf-8"), keep_blank_values=True))
        if not RequestValidator(TOKEN).validate(URL, params, sig):
            raise AssertionError

    def naive_form_preparsed() -> None:
        if not validator.validate(URL, SMS, sig):
            raise AssertionError

    jbody = b'{"MessageSid": "SM1", "Body": "hello", "From": "+15551234567"}'
    jurl = f"{URL}?bodySHA256={hashlib.sha256(jbody).hexdigest()}"
    jsig = validator.compute_signature(jurl, {})
    jtext = jbody.decode("utf-8")

    def our_json() -> None:
        ours.verify(
            assistant_id=None, url=jurl, signature=jsig, body=jbody, content_type="application/json"
        )

    def naive_json() -> None:
        if not validator.validate(jurl, jtext, jsig):
            raise AssertionError

    rows = [
        ("twilio form: ours verify(raw body)", median_us(our_form, reps)),
        ("twilio form: parse_qs + RequestValidator.validate", median_us(naive_form, reps)),
        (
            "twilio form: RequestValidator.validate (pre-parsed)",
            median_us(naive_form_preparsed, reps),
        ),
        ("twilio form: ours, 2 tokens, match on 2nd", median_us(our_form_rotated, reps)),
        ("twilio json: ours verify", median_us(our_json, reps)),
        ("twilio json: RequestValidator.validate", median_us(naive_json, reps)),
    ]
    spec = RateLimitSpec.parse("1000000/minute")
    for strategy in ("moving-window", "fixed-window"):
        limiter = RateLimiter(strategy=strategy)
        keys = [f"198.51.{i // 256}.{i % 256}" for i in range(1024)]
        counter = iter(range(10**9))

        def hit(
            limiter: RateLimiter = limiter, keys: list[str] = keys, counter: object = counter
        ) -> None:
            limiter.hit(keys[next(counter) % 1024], spec)  # type: ignore[call-overload]

        rows.append((f"ratelimit memory {strategy}: hit", median_us(hit, reps)))

    width = max(len(name) for name, _ in rows)
    print(f"{'case':<{width}}  median µs   (reps={reps})")
    for name, value in rows:
        print(f"{name:<{width}}  {value:9.2f}")
    base = dict(rows)
    ours_form = base["twilio form: ours verify(raw body)"]
    ratios = [
        (
            "parse_qs+validate / ours",
            base["twilio form: parse_qs + RequestValidator.validate"],
            ours_form,
        ),
        (
            "validate(pre-parsed dict) / ours",
            base["twilio form: RequestValidator.validate (pre-parsed)"],
            ours_form,
        ),
        (
            "json validate / ours",
            base["twilio json: RequestValidator.validate"],
            base["twilio json: ours verify"],
        ),
    ]
    print()
    for label, naive, mine in ratios:
        print(f"ratio {label:<34} {naive / mine:5.2f}x")


if __name__ == "__main__":
    main()
