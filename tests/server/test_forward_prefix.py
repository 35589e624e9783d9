"""Forward auth for a service mounted under a prefix the proxy strips: with ``[proxies]
forwarded_prefix = true`` a trusted proxy's ``X-Forwarded-Prefix`` is cut from the
original URI, so the decision is about the path the service routes. From anyone else, or
when not enabled, the header is refused (400), never ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from proxy_stack import DOCS, Stack, header, proxied
from test_nginx import NGINX, nginx_argv

from illumichat_authz.facts import InMemoryFacts
from illumichat_authz.server import create_app
from illumichat_authz.testing import (
    FactsBuilder,
    build_test_authorizer,
    make_test_settings,
    serve_asgi,
    session_cookie,
)
from illumichat_authz.testing.fixtures import DEV_SESSION_SECRET
from illumichat_authz.testing.minting import LocalIssuer

pytestmark = pytest.mark.interop


def _facts() -> InMemoryFacts:
    facts = FactsBuilder()
    (
        facts.workspace("w1")
        .member("gus", role="guest")
        .member("alice", role="owner")
        .assistant("a-pub", visibility="public", creator="alice")
    )
    return facts.facts


def _server(**proxies: Any) -> Iterator[str]:
    settings = make_test_settings(
        jwks_url="http://127.0.0.1:9/.well-known/jwks.json",
        routes={"undeclared": "authenticated"},
        proxies=proxies,
    )
    authorizer = build_test_authorizer(settings, facts=_facts())
    with serve_asgi(create_app(authorizer=authorizer)) as url:
        yield url
    authorizer.rate_limiter.close()


@pytest.fixture(scope="module")
def trusted() -> Iterator[str]:
    yield from _server(trusted=["127.0.0.1/32"], forwarded_prefix=True)


@pytest.fixture(scope="module")
def untrusted() -> Iterator[str]:
    yield from _server(trusted=["10.0.0.0/8"], forwarded_prefix=True)


@pytest.fixture(scope="module")
def disabled() -> Iterator[str]:
    yield from _server(trusted=["127.0.0.1/32"])


def ask(url: str, method: str, uri: str, user: str | None = None, **extra: str) -> httpx.Response:
    headers = {"x-original-method": method, "x-original-uri": uri, **extra}
    if user is not None:
        headers["cookie"] = session_cookie(user, secret=DEV_SESSION_SECRET, workspace="w1")
    return httpx.get(f"{url}/auth", headers=headers, timeout=10)


SVC = {"x-forwarded-prefix": "/svc"}


def test_trusted_prefix_decides_the_path_below_it(trusted: str) -> None:
    # The service routes /api/...: the guest is refused settings, the widget is public.
    denied = ask(trusted, "PATCH", "/svc/api/workspaces/w1/settings", "gus", **SVC)
    assert (denied.status_code, denied.json()["reason"]) == (403, "insufficient_role")
    widget = ask(trusted, "GET", "/svc/api/widget/a-pub/config", **SVC)
    assert widget.status_code == 200
    assert widget.headers["x-authz-route"] == "GET /api/widget/{assistantId}/config"
    owner = ask(trusted, "GET", "/svc/api/workspaces/w1/billing?x=1", "alice", **SVC)
    assert (owner.status_code, owner.headers["x-authz-action"]) == (200, "billing:read")
    # A trailing slash on the prefix is the same prefix.
    slash = ask(trusted, "GET", "/svc/api/widget/a-pub/config", **{"x-forwarded-prefix": "/svc/"})
    assert slash.status_code == 200


@pytest.mark.parametrize(
    "uri",
    [
        "/api/workspaces/w1/settings",  # not under the prefix at all
        "/svcx/api/workspaces/w1/settings",  # not on a segment boundary
        "/svc%2Fapi/workspaces/w1/settings",  # an encoded slash is no boundary
        "/SVC/api/workspaces/w1/settings",
        "/sv%63/api/workspaces/w1/settings",
    ],
)
def test_uri_outside_the_prefix_is_400(trusted: str, uri: str) -> None:
    response = ask(trusted, "PATCH", uri, "gus", **SVC)
    assert (response.status_code, response.json()["reason"]) == (400, "non_canonical_path")


def test_prefix_twice_is_400(trusted: str) -> None:
    response = httpx.get(
        f"{trusted}/auth",
        headers=[
            ("x-original-method", "GET"),
            ("x-original-uri", "/svc/api/widget/a-pub/config"),
            ("x-forwarded-prefix", "/svc"),
            ("x-forwarded-prefix", "/svc/api"),
        ],
        timeout=10,
    )
    assert (response.status_code, response.json()["reason"]) == (400, "bad_header")


def test_untrusted_peer_prefix_is_refused(untrusted: str) -> None:
    # Ignoring it would decide /svc/api/... (undeclared: any signed-in caller passes)
    # while the service runs /api/workspaces/w1/settings.
    response = ask(untrusted, "PATCH", "/svc/api/workspaces/w1/settings", "gus", **SVC)
    assert (response.status_code, response.json()["reason"]) == (400, "bad_header")
    assert "trusted proxy" in response.json()["detail"]
    # Without the header nothing changes.
    assert ask(untrusted, "GET", "/api/widget/a-pub/config").status_code == 200


def test_prefix_refused_unless_enabled(disabled: str) -> None:
    response = ask(disabled, "PATCH", "/svc/api/workspaces/w1/settings", "gus", **SVC)
    assert (response.status_code, response.json()["reason"]) == (400, "bad_header")
    assert "forwarded_prefix" in response.json()["detail"]
    assert ask(disabled, "GET", "/api/widget/a-pub/config").status_code == 200


# --- Behind a real nginx, with the documented mounted location -------------------------


def _mounted_nginx_argv(tmp: Path, auth: int, upstream: int, port: int) -> list[str]:
    """test_nginx's documented server, plus the documented ``/svc/`` locations."""
    argv = nginx_argv(tmp, auth, upstream, port)
    blocks = re.findall(r"```nginx\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert len(blocks) >= 2, "docs/forward-auth.md has no mounted nginx locations"
    conf = tmp / "nginx.conf"
    anchor = "    location @authz_denied {"
    text = conf.read_text()
    assert text.count(anchor) == 1
    conf.write_text(text.replace(anchor, blocks[1] + "\n" + anchor))
    return argv


@pytest.fixture(scope="module")
def mounted_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    settings = make_test_settings(
        jwks_url="http://127.0.0.1:9/.well-known/jwks.json",
        routes={"undeclared": "authenticated"},
        proxies={"trusted": ["127.0.0.1/32"], "forwarded_prefix": True},
    )
    authorizer = build_test_authorizer(settings, facts=_facts())
    issuer = LocalIssuer(issuer="https://unused.invalid/", audience="unused")
    seeded = (authorizer, settings, issuer)
    with proxied("nginx", _mounted_nginx_argv, tmp_path_factory.mktemp("nginx"), seeded) as stack:
        yield stack
    authorizer.rate_limiter.close()


def test_nginx_mounted_location(mounted_stack: Stack) -> None:
    guest = {"cookie": mounted_stack.session("gus")}
    response, seen = mounted_stack.fetch("PATCH", "/svc/api/workspaces/w1/settings", headers=guest)
    assert (response.status_code, seen) == (403, [])
    response, seen = mounted_stack.fetch("GET", "/svc/api/widget/a-pub/config")
    assert response.status_code == 200
    assert [r["path"] for r in seen] == ["/api/widget/a-pub/config"]  # nginx stripped /svc
    owner = {"cookie": mounted_stack.session("alice")}
    response, seen = mounted_stack.fetch("GET", "/svc/api/workspaces/w1/billing", headers=owner)
    assert (response.status_code, [r["path"] for r in seen]) == (
        200,
        ["/api/workspaces/w1/billing"],
    )
    assert header(seen[0], "x-authz-action") == ["billing:read"]


def test_nginx_client_cannot_name_a_prefix(mounted_stack: Stack) -> None:
    # The unmounted location's auth request drops the client's X-Forwarded-Prefix, so
    # /api/workspaces/w1/settings is decided whole (believed, /api would leave an
    # undeclared /workspaces/w1/settings that any signed-in caller passes).
    forged = {"cookie": mounted_stack.session("gus"), "x-forwarded-prefix": "/api"}
    response, seen = mounted_stack.fetch("PATCH", "/api/workspaces/w1/settings", headers=forged)
    assert (response.status_code, seen) == (403, [])
    # The mounted one sets its own.
    forged["x-forwarded-prefix"] = "/svc/api"
    response, seen = mounted_stack.fetch("PATCH", "/svc/api/workspaces/w1/settings", headers=forged)
    assert (response.status_code, seen) == (403, [])
