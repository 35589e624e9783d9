"""The AuthZEN access evaluation API: protected by a bearer token, same rules as HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.server import create_app
from illumichat_authz.testing.fixtures import FactsBuilder

TOKEN = "authzen-test-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}


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
    headers: dict[str, str] | None = None,
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


@pytest.mark.parametrize("content", [b"[" * 60_000, b'{"a":' * 10_000])
def test_deeply_nested_json_is_400_not_a_crash(authorizer: Authorizer, content: bytes) -> None:
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
