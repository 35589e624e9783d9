"""``below_mount``: the one rule every adapter and forward auth use to find the path the
framework routes under a mount (docs/integrations.md, "Mounted under a prefix")."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from illumichat_authz.errors import BadRequestError
from illumichat_authz.integrations._common import below_mount


@pytest.mark.parametrize(
    ("raw", "mount", "routed", "expected"),
    [
        ("/svc/api/x", "/svc", b"/api/x", ("/svc", "/api/x")),
        ("/svc", "/svc", b"", ("/svc", "/")),  # the mount itself is its root
        ("/svc/", "/svc", b"/", ("/svc", "/")),
        ("/svc/caf%C3%A9", "/svc", "/café".encode(), ("/svc", "/caf%C3%A9")),
        ("/a%20b/x", "/a b", b"/x", ("/a%20b", "/x")),  # the mount's encoded form
        ("/svc//x", "/svc/", b"/x", ("/svc/", "/x")),  # uvicorn --root-path /svc/
        ("/api/x", "/svc", b"/api/x", ("", "/api/x")),  # a proxy stripped it: routed whole
        ("/svcx/api", "/svc", b"/svcx/api", ("", "/svcx/api")),  # no boundary: not the mount
        ("/api/x", "/", b"/api/x", ("", "/api/x")),
        ("/api/x", "", b"/api/x", ("", "/api/x")),
        ("/svc/api/x", "/svc", None, ("/svc", "/api/x")),  # forward auth: only the prefix
    ],
)
def test_split(raw: str, mount: str, routed: bytes | None, expected: tuple[str, str]) -> None:
    assert below_mount(raw, mount, routed) == expected


@pytest.mark.parametrize(
    ("raw", "mount", "routed"),
    [
        ("/svc%2Fapi/x", "/svc", b"/api/x"),  # Mount or DispatcherMiddleware decoded %2F
        ("/svcx/api", "/svc", b"x/api"),  # gunicorn's prefix test is not segment-aligned
        ("//svc/api", "/svc", b"/api"),  # waitress collapses leading slashes
        ("/sv%63/api", "/svc", b"/api"),
        ("/SVC/api", "/svc", b"/api"),
        ("/svc/api/x", "/svc", b"/x"),  # a rewrite the raw target does not show
        ("/svc/api/x", "", b"/api/x"),  # a prefix cut from PATH_INFO, not put in SCRIPT_NAME
        ("/api/x", "/svc", None),  # forward auth: the URI is not under the prefix
        ("/svcx/api", "/svc", None),
        ("/svc%2Fapi", "/svc", None),
    ],
)
def test_unreconcilable_is_400(raw: str, mount: str, routed: bytes | None) -> None:
    with pytest.raises(BadRequestError) as caught:
        below_mount(raw, mount, routed)
    assert caught.value.reason.value == "non_canonical_path"


segment = st.text(alphabet="abcAB%2F.-_~", min_size=0, max_size=6)
target = st.lists(segment, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))


@given(raw=target, mount=st.sampled_from(["", "/svc", "/a", "/svc/x"]), routed=target)
def test_what_is_classified_is_what_is_routed(raw: str, mount: str, routed: str) -> None:
    try:
        prefix, path = below_mount(raw, mount, unquote_to_bytes(routed))
    except BadRequestError:
        return
    assert prefix + path in (raw, raw + "/")
    assert unquote_to_bytes(path) == unquote_to_bytes(routed)
