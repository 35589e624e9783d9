"""The one bounded body reader and the one request-target parser every adapter uses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from illumichat_authz.errors import BadRequestError
from illumichat_authz.integrations import read_bounded, request_target
from illumichat_authz.reasons import Reason


def read(declared: str | None, chunks: list[bytes], limit: int) -> tuple[bytes | None, list[str]]:
    """``read_bounded``'s answer, and what happened to the stream."""
    events: list[str] = []

    async def stream() -> AsyncGenerator[bytes, None]:
        try:
            for chunk in chunks:
                events.append("read")
                yield chunk
        finally:
            events.append("closed")

    return asyncio.run(read_bounded(declared, stream(), limit)), events


def test_a_body_within_the_limit_is_read_whole() -> None:
    assert read("5", [b"ab", b"c", b"de"], 5) == (b"abcde", ["read", "read", "read", "closed"])
    assert read(None, [b"ab", b""], 5) == (b"ab", ["read", "read", "closed"])
    assert read(" 2 ", [b"ab"], 2)[0] == b"ab"


@pytest.mark.parametrize("declared", ["6", "-1", "1e3", "0x10", "", "5, 5"])
def test_a_declared_length_over_the_limit_or_unreadable_is_refused_unread(declared: str) -> None:
    assert read(declared, [b"abcdef"], 5) == (None, [])


def test_an_undeclared_body_stops_at_the_limit_and_the_stream_is_closed() -> None:
    body, events = read(None, [b"abc", b"def", b"never"], 5)
    assert body is None
    assert events == ["read", "read", "closed"]


def test_the_first_origin_form_target_is_split_below_the_mount() -> None:
    targets = [None, "*", "/svc/api/x%2Fy?q=1", "/other"]
    assert request_target(targets, b"/svc", b"/api/x/y") == ("/svc", "/api/x%2Fy", "q=1")
    # The mount is only known (forward auth): the target is classified below it.
    assert request_target(["/svc/a?b"], "/svc", None) == ("/svc", "/a", "b")


def test_without_a_raw_target_the_decoded_path_is_re_encoded() -> None:
    assert request_target([], b"/svc", b"/a b/%", query="x=1") == ("/svc", "/a%20b/%25", "x=1")


def test_no_target_and_nothing_decoded_is_a_400() -> None:
    with pytest.raises(BadRequestError) as info:
        request_target(["http://example.com/a"], "", None)
    assert info.value.reason is Reason.NON_CANONICAL_PATH
