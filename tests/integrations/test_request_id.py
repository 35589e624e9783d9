"""An allowed response carries ``x-request-id`` as every denial does: the caller's when it
is sane, else a fresh one; an id the app set itself is left alone. DRF's classes alone
cannot touch a response (the Django middleware does it there), so DRF is not listed.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from adapter_apps import CHATS, CONFIG, Target, adapter_app
from conftest import cookie_header, make_authorizer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from test_django_mw import django_configured  # noqa: F401 (a fixture)

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.integrations.asgi import AuthzMiddleware
from illumichat_authz.integrations.wsgi import AuthzWSGIMiddleware
from illumichat_authz.request import RequestFacts

pytestmark = pytest.mark.usefixtures("django_configured")

FRESH = re.compile(r"[0-9a-f]{32}\Z")


@pytest.fixture(scope="module")
def authorizer() -> Authorizer:
    return make_authorizer()


def get(path: str, **headers: str) -> RequestFacts:
    return RequestFacts.build(
        method="GET", path=path, headers=[("host", "api.example.test"), *headers.items()]
    )


@pytest.mark.parametrize("adapter", ["asgi", "wsgi", "fastapi", "flask", "django"])
def test_an_allowed_response_carries_the_request_id(adapter: str, authorizer: Authorizer) -> None:
    with adapter_app(adapter, authorizer) as target:
        echoed = target.call(get(CHATS, **cookie_header(), **{"x-request-id": "req-42.a:b"}))
        assert echoed.status_code == 200
        assert echoed.headers["x-request-id"] == "req-42.a:b"
        fresh = target.call(get(CONFIG))
        assert fresh.status_code == 200
        assert FRESH.match(fresh.headers["x-request-id"])
        hostile = target.call(get(CONFIG, **{"x-request-id": "a\tb <script>"}))
        assert FRESH.match(hostile.headers["x-request-id"])
        assert len(target.ran) == 3


def test_an_id_the_asgi_app_set_is_kept(authorizer: Authorizer) -> None:
    async def own(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", headers={"X-Request-ID": "the-app's"})

    app = AuthzMiddleware(Starlette(routes=[Route(CONFIG, own)]), authorizer=authorizer)
    response = Target(app, True).call(get(CONFIG, **{"x-request-id": "caller"}))
    assert response.headers["x-request-id"] == "the-app's"  # one value, not two


def test_an_id_the_wsgi_app_set_is_kept(authorizer: Authorizer) -> None:
    def own(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-Request-Id", "the-app's")])
        return [b"ok"]

    app = AuthzWSGIMiddleware(own, authorizer=authorizer)
    response = Target(app, False).call(get(CONFIG, **{"x-request-id": "caller"}))
    assert response.headers["x-request-id"] == "the-app's"


@pytest.mark.parametrize("adapter", ["asgi", "wsgi", "fastapi", "flask", "django"])
def test_with_a_database_an_allowed_response_carries_the_facts_revision(
    adapter: str, tmp_path: Any
) -> None:
    """The revision the decision saw (read-your-writes: a client sends it back as
    ``X-Authz-Revision``), on the answers the app gives, as on every denial."""
    from conftest import SECRET

    from illumichat_authz import load_settings
    from illumichat_authz.facts import Assistant, Membership
    from illumichat_authz.stores.sql import migrate
    from illumichat_authz.stores.sql.database import Database

    url = f"sqlite:///{tmp_path / 'facts.db'}"
    settings = load_settings(
        overrides={
            "session": {"secrets": [SECRET], "workspace_claim": "workspace"},
            "database": {"url": url, "poll_interval_s": 0.05},
        }
    )
    db = Database(settings.database)
    migrate.upgrade(db.engine)
    rev = db.writer.apply(
        upsert=[
            Membership(user="u1", workspace="w1", role="member"),
            Assistant(id="a1", workspace="w1", visibility="public", creator="u1"),
        ]
    )
    db.close()
    authorizer = Authorizer.from_settings(settings)
    try:
        authorizer.database.feed.check()
        with adapter_app(adapter, authorizer) as target:
            for request in (get(CONFIG), get(CHATS, **cookie_header())):
                answer = target.call(request)
                assert answer.status_code == 200
                assert answer.headers["x-authz-revision"] == str(rev)  # one value, not joined
            denied = target.call(get(CHATS))  # no credential: 401
            assert denied.status_code == 401
            assert denied.headers["x-authz-revision"] == str(rev)
            assert len(target.ran) == 2
    finally:
        authorizer.close()
