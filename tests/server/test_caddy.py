"""A real Caddy (Debian's 2.6) with forward_auth in front of a recording upstream.

The Caddyfile is read from docs/forward-auth.md. Caddy speaks Traefik's dialect
(``X-Forwarded-Method``/``-Uri``), passes every client header to us and denials back as
they are, and in 2.6 copies an absent header as its unresolved placeholder.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from proxy_stack import (
    DENIALS,
    Stack,
    check_allowed_with_identity,
    check_bearer,
    check_chunked_session,
    check_denied,
    check_public_route_names_nobody,
    check_rate_limited,
    check_revision,
    database_authorizer,
    documented_snippet,
    proxied,
    proxied_to_nobody,
    seeded_authorizer,
)

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import Settings
from illumichat_authz.testing.minting import LocalIssuer

pytestmark = pytest.mark.interop

CADDY = shutil.which("caddy")


def caddy_argv(tmp: Path, auth: int, upstream: int, port: int) -> list[str]:
    caddyfile = tmp / "Caddyfile"
    caddyfile.write_text(
        documented_snippet("caddy")
        .replace("127.0.0.1:9180", f"127.0.0.1:{auth}")
        .replace("127.0.0.1:8000", f"127.0.0.1:{upstream}")
        .replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    )
    assert CADDY is not None
    return [CADDY, "run", "--config", str(caddyfile), "--adapter", "caddyfile"]


def caddy_home(tmp: Path) -> dict[str, str]:
    # Caddy keeps its autosave and storage under XDG dirs: not in the real home.
    return {"XDG_CONFIG_HOME": str(tmp / "config"), "XDG_DATA_HOME": str(tmp / "data")}


module_authorizer = pytest.fixture(scope="module", name="module_authorizer")(seeded_authorizer)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    module_authorizer: tuple[Authorizer, Settings, LocalIssuer],
) -> Iterator[Stack]:
    if CADDY is None:
        pytest.skip("caddy is not installed (apt-get install caddy)")
    tmp = tmp_path_factory.mktemp("caddy")
    with proxied("caddy", caddy_argv, tmp, module_authorizer, env=caddy_home(tmp)) as stack:
        yield stack


def test_allowed_request_reaches_upstream_with_identity_not_the_clients(stack: Stack) -> None:
    check_allowed_with_identity(stack)


def test_three_chunk_session_through_caddy(stack: Stack) -> None:
    check_chunked_session(stack)


def test_bearer_token_through_caddy(stack: Stack) -> None:
    check_bearer(stack)


def test_public_route_carries_no_identity_and_no_placeholder(stack: Stack) -> None:
    check_public_route_names_nobody(stack)


@pytest.mark.parametrize(("method", "path", "who", "status", "reason"), DENIALS)
def test_denied_requests_never_reach_upstream(
    stack: Stack, method: str, path: str, who: str | None, status: int, reason: str
) -> None:
    check_denied(stack, method, path, who, status, reason)


def test_client_cannot_name_another_original_request(stack: Stack) -> None:
    # Caddy sets X-Forwarded-Uri; a client adds nginx's X-Original-URI naming a public path.
    response, seen = stack.fetch(
        "GET",
        "/api/assistants/a-priv",
        headers={"x-original-uri": "/api/widget/a-pub/config", "x-original-method": "GET"},
    )
    assert seen == []
    assert response.status_code == 400
    assert response.json()["reason"] == "bad_header"


def test_rate_limit_429_propagates_with_headers(stack: Stack) -> None:
    last = check_rate_limited(stack)
    assert last.headers["x-request-id"] == "t-1"


def test_auth_server_down_fails_closed(tmp_path: Path) -> None:
    if CADDY is None:
        pytest.skip("caddy is not installed")
    with proxied_to_nobody("caddy", caddy_argv, tmp_path, env=caddy_home(tmp_path)) as (
        url,
        upstream,
    ):
        response = httpx.get(f"{url}/api/widget/a1/config", timeout=10)
    assert response.status_code == 502
    assert upstream.seen == []


def test_read_your_writes_through_caddy(tmp_path: Path) -> None:
    """With [database]: the client's X-Authz-Revision reaches the decision, ours replaces it
    for the upstream (``copy_headers``)."""
    if CADDY is None:
        pytest.skip("caddy is not installed (apt-get install caddy)")
    with (
        database_authorizer(tmp_path) as (authz, settings, issuer, rev),
        proxied(
            "caddy", caddy_argv, tmp_path, (authz, settings, issuer), env=caddy_home(tmp_path)
        ) as stack,
    ):
        check_revision(stack, rev, to_client=False)
