"""The proxies' CORS recipes in docs/forward-auth.md ("CORS preflights"), for real: with
the recipe added to the documented configuration, nginx, Caddy and Traefik answer a preflight
themselves (the headers a browser needs, an ok status) and neither the forward-auth
server's refusal nor the upstream is reached; real requests still go through forward auth.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from proxy_stack import DOCS, Stack, proxied, seeded_authorizer
from test_caddy import CADDY, caddy_argv, caddy_home
from test_nginx import NGINX, nginx_argv
from test_traefik import TRAEFIK, traefik_argv, wait_for_routes

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import Settings
from illumichat_authz.testing.minting import LocalIssuer

pytestmark = pytest.mark.interop

ORIGIN = "https://app.example.com"
PREFLIGHT = {"origin": ORIGIN, "access-control-request-method": "PATCH"}
Argv = Callable[[Path, int, int, int], list[str]]

module_authorizer = pytest.fixture(scope="module", name="module_authorizer")(seeded_authorizer)


def recipe(language: str) -> str:
    """The ``language`` block of the "CORS preflights" section."""
    section = DOCS.read_text().split("## CORS preflights", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert match, f"the CORS preflights section has no {language} block"
    return match.group(1)


def with_caddy_recipe(tmp: Path, auth: int, upstream: int, port: int) -> list[str]:
    argv = caddy_argv(tmp, auth, upstream, port)
    caddyfile = tmp / "Caddyfile"
    text = caddyfile.read_text()
    # The recipe goes inside the route, before forward_auth, as the section says.
    indented = "".join(f"\t\t{line}\n" if line else "\n" for line in recipe("caddy").splitlines())
    caddyfile.write_text(text.replace("\t\tforward_auth", indented + "\t\tforward_auth", 1))
    return argv


def with_traefik_recipe(tmp: Path, auth: int, upstream: int, port: int) -> list[str]:
    argv = traefik_argv(tmp, auth, upstream, port)
    dynamic = tmp / "dynamic.yml"
    text = dynamic.read_text()
    cors = recipe("yaml").split("  middlewares:\n", 1)[1]
    assert "middlewares: [illumichat-authz]" in text
    text = text.replace("middlewares: [illumichat-authz]", "middlewares: [cors, illumichat-authz]")
    dynamic.write_text(text.replace("  middlewares:\n", "  middlewares:\n" + cors, 1))
    return argv


def with_nginx_recipe(tmp: Path, auth: int, upstream: int, port: int) -> list[str]:
    argv = nginx_argv(tmp, auth, upstream, port)
    conf = tmp / "nginx.conf"
    text = recipe("nginx")
    origin_map = re.search(r"^map .*?^}\n", text, re.DOTALL | re.MULTILINE)
    answer = re.search(
        r"^( *)if \(\$request_method = OPTIONS\) \{.*?^\1\}\n", text, re.DOTALL | re.M
    )
    assert origin_map, "the nginx recipe lost its map"
    assert answer, "the nginx recipe lost its if block"
    main = conf.read_text()
    main = main.replace(
        "upstream illumichat_authz", origin_map.group(0) + "upstream illumichat_authz", 1
    )
    conf.write_text(main.replace("    location / {\n", "    location / {\n" + answer.group(0), 1))
    return argv


PROXIES: dict[str, tuple[str | None, Argv, Callable[[Path], dict[str, str]] | None]] = {
    "nginx": (NGINX, with_nginx_recipe, None),
    "caddy": (CADDY, with_caddy_recipe, caddy_home),
    "traefik": (TRAEFIK, with_traefik_recipe, None),
}


@pytest.fixture(scope="module", params=list(PROXIES))
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    module_authorizer: tuple[Authorizer, Settings, LocalIssuer],
) -> Iterator[Stack]:
    binary, argv, env = PROXIES[request.param]
    if binary is None:
        pytest.skip(f"{request.param} is not installed")
    tmp = tmp_path_factory.mktemp(request.param)
    with proxied(request.param, argv, tmp, module_authorizer, env=env(tmp) if env else None) as s:
        if request.param == "traefik":
            wait_for_routes(s.url)  # it listens before it has loaded the routes
        yield s


def test_the_proxy_answers_a_preflight_before_forward_auth(stack: Stack) -> None:
    response, upstream_saw = stack.fetch(
        "OPTIONS", "/api/workspaces/w1/settings", headers=PREFLIGHT
    )
    assert 200 <= response.status_code < 300, response.text  # not our 403, not the upstream
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "PATCH" in response.headers["access-control-allow-methods"]
    assert upstream_saw == []


def test_real_requests_still_go_through_forward_auth(stack: Stack) -> None:
    denied, upstream_saw = stack.fetch(
        "GET", "/api/workspaces/w1/settings", headers={"origin": ORIGIN}
    )
    assert denied.status_code == 401
    assert upstream_saw == []
    cookie = {"cookie": stack.session("alice")}
    ok, upstream_saw = stack.fetch("GET", "/api/workspaces/w1/settings", headers=cookie)
    assert ok.status_code == 200, ok.text
    assert len(upstream_saw) == 1
