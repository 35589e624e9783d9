"""A host layers its own routes over the shipped table (``[policies] host_routes``).

The host's docs, health checks and static files become declared routes in the same trie;
a route two files both declare, or a parameter named differently at one position, is a
start-up error naming both files. ``{name:path}`` wildcards are public-only, last, and
own their subtree; the canonical-path gate still runs first. A trailing '/' is its own
path (Django's ``/admin/``), and on a route declared without one it stays a 400.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.cli import main
from illumichat_authz.config import load_settings
from illumichat_authz.errors import ConfigurationError
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.render import render_denial
from illumichat_authz.request import RequestFacts

HOST_ROUTES = """
[[route]]
methods = ["GET"]
path = "/docs"
class = "public"
action = "host:docs"

[[route]]
methods = ["GET"]
path = "/healthz"
class = "public"
action = "host:health"

[[route]]
methods = ["GET"]
path = "/static/{filename:path}"
class = "public"
action = "host:static"

[[route]]
methods = ["GET", "POST"]
path = "/admin/{rest:path}"
class = "public"
action = "host:admin"

[[route]]
methods = ["GET"]
path = "/reports/"
class = "authenticated"
action = "billing:read"
workspace = ["principal"]
"""
USER = Principal(user_id="u1", kind=CredentialKind.SESSION, workspace="w1")


def _config(tmp_path: Path, host: str = HOST_ROUTES, name: str = "host-routes.toml") -> Path:
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / name).write_text(host, encoding="utf-8")
    config = tmp_path / "conf" / "authz.toml"
    config.write_text(f'[policies]\nhost_routes = ["{name}"]\n', encoding="utf-8")
    return config


def _ask(
    authz: Authorizer, method: str, path: str, *, user: Principal | None = None
) -> tuple[int, str]:
    decision = authz.decide(RequestFacts.build(method=method, path=path), principal=user)
    return decision.status, decision.reason.value


@pytest.fixture
def layered(tmp_path: Path) -> Authorizer:
    return Authorizer.from_settings(load_settings(_config(tmp_path)))


@pytest.mark.parametrize(
    "path",
    [
        "/docs",
        "/healthz",
        "/static/x.css",
        "/static/css/deep/a.css",
        "/admin/",
        "/admin/auth/user/1/change/",
    ],
)
def test_layered_host_routes_are_public_and_stay_denied_without_the_layer(
    layered: Authorizer, path: str
) -> None:
    assert _ask(layered, "GET", path) == (200, "public")
    shipped = Authorizer.from_settings(load_settings())
    assert _ask(shipped, "GET", path) == (401, "undeclared_route")


def test_host_file_paths_are_relative_to_the_configuration_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    monkeypatch.chdir(tmp_path)  # not the config's directory
    settings = load_settings(config)
    assert settings.policies.host_routes == [(tmp_path / "conf" / "host-routes.toml").resolve()]


def test_the_shipped_surface_is_unchanged_under_the_layer(layered: Authorizer) -> None:
    assert _ask(layered, "GET", "/api/widget/a1/config") == (200, "public")
    assert _ask(layered, "GET", "/api/chats") == (401, "authentication_required")
    assert _ask(layered, "GET", "/nope") == (401, "undeclared_route")


def test_a_wildcard_still_sits_behind_the_canonical_path_gate(layered: Authorizer) -> None:
    for path in ("/static/../api/chats", "/static/a//b.css", "/static/%2e%2e/x", "/static/a%2fb"):
        assert _ask(layered, "GET", path) == (400, "non_canonical_path"), path
    assert _ask(layered, "DELETE", "/static/x.css") == (401, "undeclared_route")


def test_a_trailing_slash_is_its_own_path(layered: Authorizer) -> None:
    # Declared with the '/': an authenticated host route under the policy.
    assert _ask(layered, "GET", "/reports/") == (401, "authentication_required")
    assert _ask(layered, "GET", "/reports") == (401, "undeclared_route")
    # The twin of a route declared without one: 400 as before, never "undeclared" (which
    # [routes] undeclared = "authenticated" would let through past the route's policy).
    assert _ask(layered, "GET", "/api/workspaces/w1/billing/", user=USER) == (
        400,
        "non_canonical_path",
    )
    assert _ask(layered, "GET", "/nope/", user=USER) == (403, "undeclared_route")


def _error(tmp_path: Path, host: str) -> str:
    with pytest.raises(ConfigurationError) as info:
        Authorizer.from_settings(load_settings(_config(tmp_path, host)))
    return str(info.value)


def test_a_host_route_the_shipped_table_declares_names_both_files(tmp_path: Path) -> None:
    message = _error(
        tmp_path,
        '[[route]]\nmethods = ["GET"]\npath = "/api/chats"\nclass = "public"\naction = "x:y"\n',
    )
    assert "host-routes.toml route #1" in message
    assert "routes.toml route #" in message.split("shadows", 1)[1]
    assert "GET /api/chats" in message


def test_a_host_parameter_named_differently_at_a_shipped_position_names_both(
    tmp_path: Path,
) -> None:
    message = _error(
        tmp_path,
        '[[route]]\nmethods = ["PUT"]\npath = "/api/chats/{id}"\nclass = "public"\n'
        'action = "x:y"\n',
    )
    assert "host-routes.toml route #1: parameter {id}" in message
    assert "routes.toml route #" in message.split("where", 1)[1]
    assert "{chatId}" in message


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        (
            '[[route]]\nmethods = ["GET"]\npath = "/api/{rest:path}"\nclass = "public"\n'
            'action = "x:y"\n',
            "overlap",
        ),
        (
            '[[route]]\nmethods = ["GET"]\npath = "/files/{rest:path}"\nclass = "authenticated"\n'
            'action = "chat:list"\nworkspace = ["principal"]\n',
            "last segment of a public route",
        ),
        (
            '[[route]]\nmethods = ["GET"]\npath = "/f/{rest:path}/x"\nclass = "public"\n'
            'action = "x:y"\n',
            "last segment of a public route",
        ),
        ('[resources]\nchat = { read_action = "chat:read" }\n', "[resources] belongs"),
    ],
)
def test_unsafe_host_routes_are_configuration_errors(
    tmp_path: Path, host: str, fragment: str
) -> None:
    assert fragment in _error(tmp_path, host)


def test_a_route_below_a_wildcard_is_refused_whichever_file_comes_first(tmp_path: Path) -> None:
    host = HOST_ROUTES + (
        '[[route]]\nmethods = ["GET"]\npath = "/static/app/x.js"\nclass = "public"\n'
        'action = "x:y"\n'
    )
    assert "overlap" in _error(tmp_path, host)


def test_policy_check_validates_the_layered_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "check", "--config", str(_config(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "host-routes.toml" in out.splitlines()[-1]
    bad = _config(
        tmp_path,
        '[[route]]\nmethods = ["GET"]\npath = "/api/chats"\nclass = "public"\naction = "x:y"\n',
        name="bad.toml",
    )
    assert main(["policy", "check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "policies.host_routes" in err
    assert "bad.toml route #1" in err
    assert "shadows" in err


def test_a_signed_in_caller_on_an_undeclared_route_is_told_it_is_not_declared() -> None:
    authz = Authorizer.from_settings(load_settings())
    decision = authz.decide(RequestFacts.build(method="GET", path="/nope"), principal=USER)
    assert (decision.status, decision.reason.value) == (403, "undeclared_route")
    problem = json.loads(render_denial(decision).body)
    assert "workspace role" not in problem["action"]
    assert "declares no such endpoint" in problem["action"]
