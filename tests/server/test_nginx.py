"""A real nginx with auth_request in front of a recording upstream, using the documented config.

The nginx snippet is read from docs/forward-auth.md, so the documentation is what CI runs.
nginx starts as root with a generated config under tmp_path (``daemon off``, pid and logs in
tmp_path) and is stopped in the fixture's teardown.
"""

from __future__ import annotations

import json
import os
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

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def nginx_argv(tmp: Path, auth: int, upstream: int, port: int) -> list[str]:
    """The documented snippet inside a minimal main config with every path under ``tmp``."""
    snippet = (
        documented_snippet("nginx")
        .replace("127.0.0.1:9180", f"127.0.0.1:{auth}")
        .replace("127.0.0.1:8000", f"127.0.0.1:{upstream}")
        .replace("listen 127.0.0.1:8080", f"listen 127.0.0.1:{port}")
    )
    temp = {name: tmp / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
{"user root;" if os.geteuid() == 0 else ""}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
{snippet}
}}
"""
    )
    assert NGINX is not None
    log = str(tmp / "error.log")
    return [NGINX, "-p", str(tmp), "-c", str(conf), "-e", log, "-g", "daemon off;"]


module_authorizer = pytest.fixture(scope="module", name="module_authorizer")(seeded_authorizer)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    module_authorizer: tuple[Authorizer, Settings, LocalIssuer],
) -> Iterator[Stack]:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    with proxied("nginx", nginx_argv, tmp_path_factory.mktemp("nginx"), module_authorizer) as stack:
        yield stack


def test_allowed_request_reaches_upstream_with_identity(stack: Stack) -> None:
    check_allowed_with_identity(stack)


def test_three_chunk_session_through_nginx(stack: Stack) -> None:
    check_chunked_session(stack)


def test_sub_requests_reuse_a_kept_alive_connection(stack: Stack) -> None:
    # The documented upstream keepalive: one connection to the forward-auth server serves
    # consecutive sub-requests (without it, nginx opens one per request).
    before = len(stack.auth_peers)
    for _ in range(3):
        response, _seen = stack.fetch("GET", "/api/widget/a-pub/config")
        assert response.status_code == 200
    ports = {port for _host, port in stack.auth_peers[before:]}
    assert len(stack.auth_peers) - before == 3
    assert len(ports) == 1


def test_bearer_token_through_nginx(stack: Stack) -> None:
    check_bearer(stack)


def test_public_route_strips_spoofed_identity(stack: Stack) -> None:
    # nginx drops a header set to an empty value: none of them reaches the upstream.
    headers = dict(check_public_route_names_nobody(stack)["headers"])
    assert "x-authz-user-id" not in headers
    assert "x-authz-role" not in headers


@pytest.mark.parametrize(("method", "path", "who", "status", "reason"), DENIALS)
def test_denied_requests_never_reach_upstream(
    stack: Stack, method: str, path: str, who: str | None, status: int, reason: str
) -> None:
    check_denied(stack, method, path, who, status, reason)


def test_rate_limit_429_propagates_with_headers(stack: Stack) -> None:
    check_rate_limited(stack)
    assert len(stack.upstream.seen) >= 5


def test_auth_server_down_fails_closed(tmp_path: Path) -> None:
    if NGINX is None:
        pytest.skip("nginx is not installed")
    with proxied_to_nobody("nginx", nginx_argv, tmp_path) as (url, upstream):
        response = httpx.get(f"{url}/api/widget/a1/config", timeout=10)
    assert response.status_code == 503
    assert json.loads(response.text)["reason"] == "auth_unavailable"
    assert upstream.seen == []


def test_read_your_writes_through_nginx(tmp_path: Path) -> None:
    """With [database]: the client's X-Authz-Revision reaches the decision, ours reaches the
    upstream and the client (``add_header``)."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    with (
        database_authorizer(tmp_path) as (authz, settings, issuer, rev),
        proxied("nginx", nginx_argv, tmp_path, (authz, settings, issuer)) as stack,
    ):
        check_revision(stack, rev, to_client=True)
