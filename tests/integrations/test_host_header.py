"""RFC 9112 §3.2, on every adapter alike: a missing Host (HTTP/1.1), an empty one, two, two
that a WSGI server merged into one value, or one that is not ``host[:port]`` is 400
``bad_header``, and no handler runs. In-process for each adapter, then through real
waitress, wsgiref and uvicorn servers sent two Host lines on a raw socket.
"""

from __future__ import annotations

import json

import pytest
from adapter_apps import ADAPTERS, CHATS, CONFIG, adapter_app
from conftest import cookie_header, make_authorizer
from test_django_mw import django_configured  # noqa: F401 (a fixture)
from wsgi_servers import SERVERS, raw_request, serve_wsgi

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.request import RequestFacts
from illumichat_authz.testing.http import serve_asgi

pytestmark = pytest.mark.usefixtures("django_configured")

BAD_HOSTS = {
    "missing": [],
    "empty": [("host", "")],
    "blank": [("host", "  ")],
    "two lines": [("host", "a.example"), ("host", "b.example")],
    "merged by waitress": [("host", "a.example, b.example")],
    "merged by wsgiref": [("host", "a.example,b.example")],
    "userinfo": [("host", "user@a.example")],
    "space inside": [("host", "a .example")],
    "a path": [("host", "a.example/x")],
    "two ports": [("host", "a.example:80:80")],
    "no host, a port": [("host", ":8080")],
    "not IPv6": [("host", "[::1::2]")],
}
GOOD_HOSTS = ["api.example.test", "api.example.test:8443", "127.0.0.1:8000", "[::1]:80", "svc_a"]


@pytest.fixture(scope="module")
def authorizer() -> Authorizer:
    return make_authorizer()  # built once: compiling the policy is the slow part


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_bad_host_is_400_on_every_adapter(adapter: str, authorizer: Authorizer) -> None:
    with adapter_app(adapter, authorizer) as target:
        for case, hosts in BAD_HOSTS.items():
            for path, extra in ((CONFIG, {}), (CHATS, cookie_header())):
                request = RequestFacts.build(
                    method="GET", path=path, headers=[*hosts, *extra.items()]
                )
                response = target.call(request)
                assert response.status_code == 400, (case, path, response.content)
                assert json.loads(response.content)["reason"] == "bad_header", case
        assert target.ran == []


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_good_host_passes_on_every_adapter(adapter: str, authorizer: Authorizer) -> None:
    with adapter_app(adapter, authorizer) as target:
        for host in GOOD_HOSTS:
            request = RequestFacts.build(method="GET", path=CONFIG, headers=[("host", host)])
            assert target.call(request).status_code == 200, host
        assert len(target.ran) == len(GOOD_HOSTS)


@pytest.mark.parametrize("adapter", ["asgi", "fastapi"])
def test_http10_may_omit_host_but_not_repeat_it(adapter: str, authorizer: Authorizer) -> None:
    with adapter_app(adapter, authorizer) as target:
        alone = RequestFacts.build(method="GET", path=CONFIG)
        assert target.call(alone, http_version="1.0").status_code == 200
        two = RequestFacts.build(method="GET", path=CONFIG, headers=[("host", "a"), ("host", "b")])
        assert target.call(two, http_version="1.0").status_code == 400
        assert len(target.ran) == 1


TWO_HOSTS = b"GET /api/widget/a1/config HTTP/1.1\r\nHost: a.example\r\nHost: b.example"


@pytest.mark.interop
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("adapter", ["wsgi", "flask", "django"])
def test_two_host_lines_through_a_real_wsgi_server(
    server: str, adapter: str, authorizer: Authorizer
) -> None:
    # waitress and wsgiref hand the app one HTTP_HOST, "a.example, b.example" / "a,b".
    with adapter_app(adapter, authorizer) as target, serve_wsgi(target.app, server) as port:
        assert raw_request(port, TWO_HOSTS).status == 400
        no_host = raw_request(port, b"GET /api/widget/a1/config HTTP/1.1")
        assert no_host.status == 400
        ok = raw_request(port, b"GET /api/widget/a1/config HTTP/1.1\r\nHost: a.example")
        assert ok.status == 200
        assert len(target.ran) == 1


@pytest.mark.interop
@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_two_host_lines_through_uvicorn(http: str, authorizer: Authorizer) -> None:
    with adapter_app("asgi", authorizer) as target:
        with serve_asgi(target.app, http=http, ws="none") as url:
            port = int(url.rsplit(":", 1)[1])
            assert raw_request(port, TWO_HOSTS).status == 400
            assert raw_request(port, b"GET /api/widget/a1/config HTTP/1.1").status == 400
        assert target.ran == []


def test_forward_auth_checks_the_check_requests_host(authorizer: Authorizer) -> None:
    from illumichat_authz.server import create_app
    from illumichat_authz.testing.http import call_asgi_sync

    app = create_app(authorizer=authorizer)
    for case in ("missing", "two lines", "merged by waitress", "userinfo"):
        headers = [*BAD_HOSTS[case], ("x-original-uri", CONFIG)]
        check = RequestFacts.build(method="GET", path="/auth", headers=headers)
        response = call_asgi_sync(app, check)
        assert response.status_code == 400, case
        assert json.loads(response.content)["reason"] == "bad_header"
    good = RequestFacts.build(
        method="GET", path="/auth", headers=[("host", "authz:9180"), ("x-original-uri", CONFIG)]
    )
    assert call_asgi_sync(app, good).status_code == 200
