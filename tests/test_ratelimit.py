"""Rate limits as values: spec parsing and the headers an outcome renders (no storage)."""

from __future__ import annotations

import pytest

from illumichat_authz.errors import ConfigurationError
from illumichat_authz.ratelimit import RateLimitOutcome, RateLimitSpec, rate_limit_headers

# -- spec parsing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount", "window"),
    [
        ("5/minute", 5, 60),
        ("5 per minute", 5, 60),
        ("10/second", 10, 1),
        ("100/hour", 100, 3600),
        ("1000/day", 1000, 86400),
        (" 3 / Minutes ", 3, 60),
        ("7 per days", 7, 86400),
    ],
)
def test_spec_parse(text: str, amount: int, window: int) -> None:
    spec = RateLimitSpec.parse(text)
    assert (spec.amount, spec.window_s) == (amount, window)
    assert spec == RateLimitSpec.parse(f"{amount}/{spec.unit}")
    assert str(spec) == f"{amount}/{spec.unit}"


@pytest.mark.parametrize(
    "text",
    ["", "5", "0/minute", "-1/minute", "five/minute", "5/fortnight", "5/minute;10/hour",
     "5 minute", "1e3/second", "5/2 minutes", "9999999999/second"],
)  # fmt: skip
def test_spec_parse_rejects(text: str) -> None:
    with pytest.raises(ConfigurationError, match="rate limit"):
        RateLimitSpec.parse(text)


FIVE = RateLimitSpec.parse("5/minute")


# -- headers -------------------------------------------------------------------------


def test_headers_on_allow() -> None:
    out = RateLimitOutcome(allowed=True, limit=5, remaining=4, reset_after_s=59.2)
    assert rate_limit_headers(out, FIVE) == [
        ("RateLimit-Policy", '"default";q=5;w=60'),
        ("RateLimit", '"default";r=4;t=60'),
    ]


def test_headers_on_deny() -> None:
    out = RateLimitOutcome(allowed=False, limit=5, remaining=0, reset_after_s=41.3)
    assert rate_limit_headers(out, FIVE, policy="tickets") == [
        ("Retry-After", "42"),
        ("RateLimit-Policy", '"tickets";q=5;w=60'),
        ("RateLimit", '"tickets";r=0;t=42'),
    ]


@pytest.mark.parametrize("reset", [0.0, 0.001, 0.999])
def test_retry_after_is_at_least_one_second(reset: float) -> None:
    out = RateLimitOutcome(allowed=False, limit=5, remaining=0, reset_after_s=reset)
    headers = dict(rate_limit_headers(out, FIVE))
    assert headers["Retry-After"] == "1"


@pytest.mark.parametrize("name", ["", 'a"b', "a\\b", "é", "x" * 65])
def test_bad_policy_name(name: str) -> None:
    out = RateLimitOutcome(allowed=True, limit=5, remaining=4, reset_after_s=1)
    with pytest.raises(ConfigurationError):
        rate_limit_headers(out, FIVE, policy=name)
