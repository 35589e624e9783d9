"""The AuthZEN access evaluation API: protected by a bearer token, same rules as HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.errors import ConfigurationError
from illumichat_authz.server import create_app
from illumichat_authz.testing import build_test_authorizer, make_test_settings, serve_asgi
from illumichat_authz.testing.fixtures import FactsBuilder

TOKEN = "authzen-test-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
AUTH_PAIRS = [(b"authorization", AUTH["authorization"].encode())]


@pytest.fixture
def seeded(authz_facts: FactsBuilder) -> FactsBuilder:
    (
        authz_facts.workspace("w1")
        .member("olive", role="owner")
        .member("alice", role="admin")
        .member("bob", role="member")
        .member("gus", role="guest")
        .assistant("a-pub", visibility="public", creator="alice")
        .assistant("a-priv", visibility="private", creator="alice")
        .assistant("a-shared", visibility="private", creator="alice")
        .grant("bob", "a-shared")
    )
    return authz_facts


def post(
    authorizer: Authorizer,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | list[tuple[bytes, bytes]] | None = None,
    content: bytes | None = None,
    token: str | None = TOKEN,
) -> httpx.Response:
    async def go() -> httpx.Response:
        app = create_app(authorizer=authorizer, authzen_token=token)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pdp") as client:
            if content is not None:
                return await client.post(path, content=content, headers=headers)
            return await client.post(path, json=body, headers=headers)

    return asyncio.run(go())


def evaluation(user: str, action: str, rtype: str, rid: str, **extra: Any) -> dict[str, Any]:
    return {
        "subject": {"type": "user", "id": user},
        "action": {"name": action},
        "resource": {"type": rtype, "id": rid},
        **extra,
    }


@pytest.mark.parametrize(
    ("user", "action", "rtype", "rid", "decision", "reason"),
    [
        ("bob", "assistant:read", "assistant", "a-pub", True, "allowed"),
        ("bob", "assistant:read", "assistant", "a-priv", False, "not_visible"),
        ("bob", "assistant:read", "assistant", "a-shared", True, "allowed"),
        ("alice", "assistant:read", "assistant", "a-priv", True, "allowed"),
        ("bob", "assistant:update", "assistant", "a-pub", False, "insufficient_role"),
        ("olive", "billing:manage", "workspace", "w1", True, "allowed"),
        ("alice", "billing:manage", "workspace", "w1", False, "insufficient_role"),
        ("mallory", "assistant:read", "assistant", "a-pub", False, "not_a_member"),
        ("bob", "assistant:read", "assistant", "missing", False, "not_found"),
        ("bob", "teleport:now", "assistant", "a-pub", False, "policy_denied"),
        ("bob", "assistant:read", "spaceship", "x", False, "policy_denied"),
    ],
)
def test_single_evaluation(
    seeded: FactsBuilder,
    authorizer: Authorizer,
    user: str,
    action: str,
    rtype: str,
    rid: str,
    decision: bool,
    reason: str,
) -> None:
    response = post(
        authorizer,
        "/access/v1/evaluation",
        evaluation(user, action, rtype, rid),
        headers={**AUTH, "x-request-id": "req-42"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42"
    body = response.json()
    assert body["decision"] is decision
    assert body["context"]["reason"] == reason


def test_member_resource_uses_context_workspace(
    seeded: FactsBuilder, authorizer: Authorizer
) -> None:
    def remove(user: str, target: str) -> bool:
        doc = evaluation(user, "member:remove", "member", target, context={"workspace": "w1"})
        return bool(post(authorizer, "/access/v1/evaluation", doc, headers=AUTH).json()["decision"])

    assert remove("alice", "bob") is True
    assert remove("alice", "olive") is False  # admins never remove an owner
    assert remove("olive", "alice") is True


def test_subject_scopes_narrow(seeded: FactsBuilder, authorizer: Authorizer) -> None:
    doc = evaluation("alice", "assistant:delete", "assistant", "a-priv")
    doc["subject"]["properties"] = {"scopes": ["assistant:read"]}
    body = post(authorizer, "/access/v1/evaluation", doc, headers=AUTH).json()
    assert body == {
        "decision": False,
        "context": {
            "reason": "scope_not_granted",
            "status": 403,
            "reason_admin": {"en": "this credential's scopes do not include assistant:delete"},
        },
    }


def test_batch_defaults_and_overrides(seeded: FactsBuilder, authorizer: Authorizer) -> None:
    doc = {
        "subject": {"type": "user", "id": "bob"},
        "action": {"name": "assistant:read"},
        "evaluations": [
            {"resource": {"type": "assistant", "id": "a-pub"}},
            {"resource": {"type": "assistant", "id": "a-priv"}},
            {"resource": {"type": "assistant", "id": "a-shared"}},
            {
                "subject": {"type": "user", "id": "alice"},
                "resource": {"type": "assistant", "id": "a-priv"},
            },
            {
                "action": {"name": "assistant:delete"},
                "resource": {"type": "assistant", "id": "a-pub"},
            },
        ],
    }
    body = post(authorizer, "/access/v1/evaluations", doc, headers=AUTH).json()
    assert [e["decision"] for e in body["evaluations"]] == [True, False, True, True, False]


@pytest.mark.parametrize(
    ("semantic", "expected"),
    [
        ("execute_all", [True, False, True]),
        ("deny_on_first_deny", [True, False]),
        ("permit_on_first_permit", [True]),
    ],
)
def test_batch_semantics(
    seeded: FactsBuilder, authorizer: Authorizer, semantic: str, expected: list[bool]
) -> None:
    doc = {
        "subject": {"type": "user", "id": "bob"},
        "action": {"name": "assistant:read"},
        "options": {"evaluations_semantic": semantic},
        "evaluations": [
            {"resource": {"type": "assistant", "id": rid}}
            for rid in ("a-pub", "a-priv", "a-shared")
        ],
    }
    body = post(authorizer, "/access/v1/evaluations", doc, headers=AUTH).json()
    assert [e["decision"] for e in body["evaluations"]] == expected


def test_batch_without_items_is_a_single_evaluation(
    seeded: FactsBuilder, authorizer: Authorizer
) -> None:
    doc = evaluation("bob", "assistant:read", "assistant", "a-pub", evaluations=[])
    body = post(authorizer, "/access/v1/evaluations", doc, headers=AUTH).json()
    assert body["decision"] is True


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-token-0123456789"},
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": f"Bearer {TOKEN}x"},
        {"authorization": f"Bearer {TOKEN[:-1]}"},
    ],
)
def test_requires_the_bearer_token(
    seeded: FactsBuilder, authorizer: Authorizer, headers: dict[str, str]
) -> None:
    doc = evaluation("bob", "assistant:read", "assistant", "a-pub")
    response = post(authorizer, "/access/v1/evaluation", doc, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in response.text


def test_not_served_without_a_token(authorizer: Authorizer) -> None:
    doc = evaluation("bob", "assistant:read", "assistant", "a-pub")
    for path in ("/access/v1/evaluation", "/access/v1/evaluations"):
        assert post(authorizer, path, doc, headers=AUTH, token=None).status_code == 404


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"subject": {"type": "user"}, "action": {"name": "a:b"},'
        b' "resource": {"type": "x", "id": "1"}}',
        b'{"subject": "bob", "action": {"name": "a:b"}, "resource": {"type": "x", "id": "1"}}',
        b'{"subject": {"type": "user", "id": "b"}, "action": {},'
        b' "resource": {"type": "x", "id": "1"}}',
        b'{"subject": {"type": "user", "id": "b"}, "action": {"name": "a:b"}}',
        b'{"subject": {"type": "user", "id": "' + b"x" * 300 + b'"}, "action": {"name": "a:b"},'
        b' "resource": {"type": "x", "id": "1"}}',
        b'{"evaluations": {"a": 1}}',
        b'{"evaluations": [1]}',
        b'{"evaluations": [{}], "options": {"evaluations_semantic": "random"}}',
        b"\xff\xfe",
    ],
)
def test_malformed_requests_are_400(
    seeded: FactsBuilder, authorizer: Authorizer, content: bytes
) -> None:
    for path in ("/access/v1/evaluation", "/access/v1/evaluations"):
        response = post(
            authorizer, path, headers={**AUTH, "content-type": "application/json"}, content=content
        )
        assert response.status_code == 400, (path, response.text)
        assert set(response.json()) == {"error"}


@pytest.mark.parametrize(
    "content",
    [
        # Nesting deep enough to exhaust the stack: a 400, not a crash.
        b"[" * 60_000,
        b'{"a":' * 10_000,
        # Not RFC 8259 JSON, or JSON with two meanings: duplicate members (which one
        # wins?), NaN, a number that overflows.
        b'{"subject": {"type": "user", "id": "u"}, "subject": {"type": "user", "id": "v"}}',
        b'{"subject": {"type": "user", "id": "u"}, "context": {"n": NaN}}',
        b'{"context": {"n": 1e999}}',
    ],
)
def test_json_that_is_not_strict_json_is_400_not_a_crash(
    authorizer: Authorizer, content: bytes
) -> None:
    response = post(
        authorizer,
        "/access/v1/evaluation",
        headers={**AUTH, "content-type": "application/json"},
        content=content,
    )
    assert response.status_code == 400
    assert response.json() == {"error": "the body is not JSON"}


def test_limits(seeded: FactsBuilder, authorizer: Authorizer) -> None:
    big = b'{"pad": "' + b"x" * 70_000 + b'"}'
    response = post(authorizer, "/access/v1/evaluation", headers=AUTH, content=big)
    assert response.status_code == 413
    many = {
        "subject": {"type": "user", "id": "bob"},
        "action": {"name": "assistant:read"},
        "evaluations": [{"resource": {"type": "assistant", "id": "a-pub"}}] * 101,
    }
    assert post(authorizer, "/access/v1/evaluations", many, headers=AUTH).status_code == 400


def test_subject_type_other_than_user_is_denied(
    seeded: FactsBuilder, authorizer: Authorizer
) -> None:
    doc = evaluation("bob", "assistant:read", "assistant", "a-pub")
    doc["subject"]["type"] = "service"
    body = post(authorizer, "/access/v1/evaluation", doc, headers=AUTH).json()
    assert body["decision"] is False
    assert body["context"]["reason"] == "policy_denied"


def get(
    authorizer: Authorizer,
    path: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    client: tuple[str, int] = ("127.0.0.1", 5000),
    public_url: str | None = None,
) -> httpx.Response:
    async def go() -> httpx.Response:
        app = create_app(authorizer=authorizer, authzen_token=TOKEN, public_url=public_url)
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://pdp") as http:
            return await http.get(path, headers=headers)

    return asyncio.run(go())


# AuthZEN: "the PDP MUST include the same identifier in the response"; "an arbitrary string".
UNUSUAL_IDS = ["my request 42", "a\tb", "ÿ-latin-1 ü", '{"json": [1]}', "x" * 1024]


@pytest.mark.parametrize("rid", UNUSUAL_IDS)
def test_request_id_is_echoed_exactly(
    seeded: FactsBuilder, authorizer: Authorizer, rid: str
) -> None:
    doc = evaluation("bob", "assistant:read", "assistant", "a-pub")
    headers = [*AUTH_PAIRS, (b"x-request-id", rid.encode("latin-1"))]
    for path in ("/access/v1/evaluation", "/access/v1/evaluations"):
        response = post(authorizer, path, doc, headers=headers)
        assert response.status_code == 200
        assert echoed_ids(response) == [rid.encode("latin-1")]
    # Errors carry it too, and never in their body.
    response = post(authorizer, "/access/v1/evaluation", {"bad": 1}, headers=headers)
    assert response.status_code == 400
    assert echoed_ids(response) == [rid.encode("latin-1")]
    assert rid not in response.text


def echoed_ids(response: httpx.Response) -> list[bytes]:
    """The response's X-Request-ID values as bytes on the wire."""
    return [v for k, v in response.headers.raw if k.lower() == b"x-request-id"]


@pytest.mark.parametrize(
    "values",
    [["x" * 1025], ["a\x01b"], ["a\x7fb"], ["one", "two"], [""]],
    ids=["too-long", "control", "delete", "two-headers", "empty"],
)
def test_a_request_id_that_cannot_be_a_header_value_is_replaced(
    seeded: FactsBuilder, authorizer: Authorizer, values: list[str]
) -> None:
    doc = evaluation("bob", "assistant:read", "assistant", "a-pub")
    headers = [*AUTH_PAIRS, *((b"x-request-id", v.encode("latin-1")) for v in values)]
    response = post(authorizer, "/access/v1/evaluation", doc, headers=headers)
    assert response.status_code == 200
    (echoed,) = response.headers.get_list("x-request-id")
    assert len(echoed) == 32
    assert echoed not in values


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_request_id_is_echoed_exactly_by_a_real_server(
    seeded: FactsBuilder, authorizer: Authorizer, http: str
) -> None:
    doc = evaluation("bob", "assistant:read", "assistant", "a-pub")
    app = create_app(authorizer=authorizer, authzen_token=TOKEN)
    with serve_asgi(app, http=http) as url, httpx.Client(base_url=url, timeout=10) as client:
        for rid in UNUSUAL_IDS:
            headers = [(b"x-request-id", rid.encode("latin-1")), *AUTH_PAIRS]
            response = client.post("/access/v1/evaluation", json=doc, headers=headers)
            assert response.status_code == 200
            assert echoed_ids(response) == [rid.encode("latin-1")]


def test_a_malformed_batch_item_is_named_by_its_index(
    seeded: FactsBuilder, authorizer: Authorizer
) -> None:
    doc = {
        "subject": {"type": "user", "id": "bob"},
        "action": {"name": "assistant:read"},
        "evaluations": [
            {"resource": {"type": "assistant", "id": "a-pub"}},
            {"resource": {"type": "assistant", "id": "a-priv"}},
            {"resource": {"type": "assistant"}},
            7,
        ],
    }
    response = post(authorizer, "/access/v1/evaluations", doc, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"].startswith("evaluations[2]: resource.id ")
    doc["evaluations"] = [doc["evaluations"][0], 7]  # type: ignore[index]
    response = post(authorizer, "/access/v1/evaluations", doc, headers=AUTH)
    assert response.json()["error"] == "evaluations[1]: each evaluations item must be a JSON object"


def test_a_failing_evaluation_is_a_logged_500(
    seeded: FactsBuilder,
    authorizer: Authorizer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom(**_: Any) -> None:
        raise RuntimeError("store exploded: secret detail")

    monkeypatch.setattr(authorizer, "adecide_access", boom)
    doc = evaluation("bob", "assistant:read", "assistant", "a-pub")
    headers = {**AUTH, "x-request-id": "my request\t42"}
    with caplog.at_level("ERROR", logger="illumichat_authz.server"):
        response = post(authorizer, "/access/v1/evaluation", doc, headers=headers)
    assert response.status_code == 500
    assert response.json() == {"error": "internal error; no decision was made"}
    assert response.headers["x-request-id"] == "my request\t42"
    assert "secret detail" not in response.text
    (record,) = caplog.records
    # The unusual id never reaches the log line as it came (a tab here; a newline elsewhere).
    assert "my request" not in record.getMessage()


def test_metadata_names_the_configured_public_url(authorizer: Authorizer) -> None:
    response = get(
        authorizer,
        "/.well-known/authzen-configuration",
        headers=[(b"host", b"evil.example"), (b"x-request-id", b"meta 1")],
        public_url="https://pdp.example.com/",
    )
    assert response.status_code == 200
    assert response.json() == {
        "policy_decision_point": "https://pdp.example.com",
        "access_evaluation_endpoint": "https://pdp.example.com/access/v1/evaluation",
        "access_evaluations_endpoint": "https://pdp.example.com/access/v1/evaluations",
    }
    assert response.headers["x-request-id"] == "meta 1"
    assert response.headers["cache-control"] == "max-age=300"


def trusting_authorizer() -> Authorizer:
    settings = make_test_settings(
        jwks_url="http://127.0.0.1:9/jwks.json", proxies={"trusted": ["10.0.0.0/8"]}
    )
    return build_test_authorizer(settings)


FORWARDED = [
    (b"host", b"internal:9180"),
    (b"x-forwarded-host", b"pdp.example.com"),
    (b"x-forwarded-proto", b"https"),
]


@pytest.mark.parametrize(
    ("client", "headers", "pdp"),
    [
        (("10.1.2.3", 1), FORWARDED, "https://pdp.example.com"),  # a trusted proxy
        (("203.0.113.9", 1), FORWARDED, "http://internal:9180"),  # anyone else: own Host
        (("203.0.113.9", 1), [(b"host", b"127.0.0.1:9180")], "http://127.0.0.1:9180"),
    ],
)
def test_metadata_without_a_public_url_follows_the_trusted_proxy_rules(
    client: tuple[str, int], headers: list[tuple[bytes, bytes]], pdp: str
) -> None:
    response = get(
        trusting_authorizer(), "/.well-known/authzen-configuration", headers=headers, client=client
    )
    assert response.status_code == 200
    assert response.json()["policy_decision_point"] == pdp
    assert response.json()["access_evaluation_endpoint"] == pdp + "/access/v1/evaluation"
    assert "search_subject_endpoint" not in response.json()
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "host", [b"evil.example/x?", b"a@b", b"", b"a b", b"pdp.example.com\\"], ids=repr
)
def test_metadata_refuses_a_host_that_is_not_one(authorizer: Authorizer, host: bytes) -> None:
    response = get(authorizer, "/.well-known/authzen-configuration", headers=[(b"host", host)])
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


def test_metadata_is_not_served_without_a_token(authorizer: Authorizer) -> None:
    async def go() -> int:
        transport = httpx.ASGITransport(app=create_app(authorizer=authorizer))
        async with httpx.AsyncClient(transport=transport, base_url="http://pdp") as http:
            return (await http.get("/.well-known/authzen-configuration")).status_code

    assert asyncio.run(go()) == 404


@pytest.mark.parametrize(
    "url",
    [
        "pdp.example.com",
        "ftp://pdp.example.com",
        "https://u:p@pdp.example.com",
        "https://pdp.example.com/?x=1",
        "https://pdp.example.com/#f",
        "https:///x",
        "https://pdp.example.com/a b",
    ],
)
def test_a_malformed_public_url_is_a_configuration_error(authorizer: Authorizer, url: str) -> None:
    with pytest.raises(ConfigurationError, match="public URL"):
        create_app(authorizer=authorizer, authzen_token=TOKEN, public_url=url)
