"""The async driver: ``adecide`` over ``AsyncFacts`` gives exactly what ``decide`` gives.

Both drivers run the same sans-IO functions, so over a sample of the oracle's space
(``tests/oracle.py``) the decisions must be equal field for field, and both must equal
the oracle. Failures of async stores are 503s, never allows. The event loop is driven
with ``asyncio.run`` (no async test plugin needed).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from illumichat_authz import Authorizer, Decision, InMemoryFacts, RequestFacts
from illumichat_authz.config import load_settings
from illumichat_authz.credentials.apikeys import issue_api_key
from illumichat_authz.credentials.authjs import encode_session_token
from illumichat_authz.facts import Assistant, AsyncFacts, Facts, Membership, Resource
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.stores.api_keys import MemoryApiKeyStore
from illumichat_authz.stores.ratelimit import RateLimiter
from illumichat_authz.vocab import Role, Visibility
from oracle import AUTHENTICATED_ENDPOINTS, ROLES, STATUSES, Endpoint, World, encode_id, oracle

_LIMITER = RateLimiter()
SECRET = "async-driver-test-secret"
NOW = 1_750_000_000.0


class AsyncWorld:
    """An ``AsyncFacts`` over an in-memory store that yields to the loop on every lookup."""

    def __init__(self, facts: InMemoryFacts, *, fail: bool = False) -> None:
        self._facts = facts
        self._fail = fail
        self.calls = 0

    async def _hop(self) -> None:
        self.calls += 1
        await asyncio.sleep(0)
        if self._fail:
            raise ConnectionError("async backend is down")

    async def membership(self, user: str, workspace: str) -> Membership | None:
        await self._hop()
        return self._facts.membership(user, workspace)

    async def resource(self, kind: str, id: str) -> Resource | None:
        await self._hop()
        return self._facts.resource(kind, id)

    async def has_grant(self, user: str, kind: str, id: str) -> bool:
        await self._hop()
        return self._facts.has_grant(user, kind, id)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Authorizer:
    tmp = tmp_path_factory.mktemp("async")
    settings = load_settings(
        overrides={
            "session": {"secrets": [SECRET], "workspace_claim": "ws"},
            "api_keys": {"database": str(tmp / "unused.sqlite")},
            "twilio": {"auth_tokens": ["tok-async"]},
        }
    )
    return Authorizer.from_settings(settings, facts=InMemoryFacts(), rate_limiter=_LIMITER)


def driver(shared: Authorizer, facts: Facts | AsyncFacts, **stores: Any) -> Authorizer:
    stores.setdefault("rate_limiter", _LIMITER)
    return Authorizer(core=shared.core, facts=facts, clock=lambda: NOW, **stores)


def run(coro: Awaitable[Decision]) -> Decision:
    async def main() -> Decision:
        return await coro

    return asyncio.run(main())


def test_the_protocols_tell_sync_and_async_facts_apart() -> None:
    world = InMemoryFacts()
    assert isinstance(world, Facts)
    assert isinstance(AsyncWorld(world), AsyncFacts)


def test_adecide_with_async_facts_and_a_real_session(shared: Authorizer) -> None:
    facts = InMemoryFacts(
        memberships=[Membership(user="u-1", workspace="ws-1", role=Role.ADMIN)],
        assistants=[
            Assistant(id="a-1", workspace="ws-1", visibility=Visibility.PRIVATE, creator="u-2")
        ],
    )
    async_facts = AsyncWorld(facts)
    authz = driver(shared, async_facts)
    token = encode_session_token({"sub": "u-1", "ws": "ws-1"}, secret=SECRET, now=NOW)
    request = RequestFacts.build(
        method="DELETE",
        path="/api/assistants/a-1",
        headers={"cookie": f"authjs.session-token={token}"},
    )
    decision = run(authz.adecide(request))
    assert (decision.status, decision.reason.value, decision.role) == (200, "allowed", "admin")
    assert async_facts.calls >= 2  # the assistant and the membership were awaited
    assert decision == driver(shared, facts).decide(request)


def test_adecide_with_a_real_api_key(shared: Authorizer) -> None:
    store = MemoryApiKeyStore()
    token, record = issue_api_key(
        user_id="u-1", workspace="ws-1", scopes={"assistant:list"}, now=NOW - 5
    )
    store.add(record)
    facts = InMemoryFacts(memberships=[Membership(user="u-1", workspace="ws-1", role=Role.GUEST)])
    authz = driver(shared, AsyncWorld(facts), api_keys=store)
    listing = RequestFacts.build(
        method="GET", path="/api/assistants", headers={"authorization": f"Bearer {token}"}
    )
    creating = RequestFacts.build(
        method="POST", path="/api/assistants", headers={"authorization": f"Bearer {token}"}
    )
    assert run(authz.adecide(listing)).reason.value == "allowed"
    used = store.get(record.key_id)
    assert used is not None
    assert used.last_used_at is not None  # recorded off the event loop
    assert run(authz.adecide(creating)).reason.value == "scope_not_granted"
    # Revocation through the authorizer is immediate (the credential cache forgets it).
    assert authz.revoke_api_key(record.key_id)
    assert run(authz.adecide(listing)).reason.value == "api_key_revoked"


def test_async_facts_that_raise_are_503(shared: Authorizer) -> None:
    authz = driver(shared, AsyncWorld(InMemoryFacts(), fail=True))
    principal = Principal(user_id="u-1", kind=CredentialKind.SESSION, workspace="ws-1")
    request = RequestFacts.build(method="GET", path="/api/assistants/a-1")
    decision = run(authz.adecide(request, principal=principal))
    assert (decision.status, decision.reason.value) == (503, "facts_unavailable")
    access = run(authz.adecide_access(principal=principal, action="assistant:list"))
    assert (access.status, access.reason.value) == (503, "facts_unavailable")


def test_an_async_key_store_failure_is_503(shared: Authorizer) -> None:
    class Down(MemoryApiKeyStore):
        def get(self, key_id: str) -> Any:
            raise OSError("database is locked")

    token, _ = issue_api_key(user_id="u-1", workspace="ws-1", now=NOW)
    authz = driver(shared, InMemoryFacts(), api_keys=Down())
    request = RequestFacts.build(
        method="GET", path="/api/assistants", headers={"authorization": f"Bearer {token}"}
    )
    decision = run(authz.adecide(request))
    assert (decision.status, decision.reason.value) == (503, "auth_unavailable")


def test_an_async_rate_limiter_failure_is_503(shared: Authorizer) -> None:
    class Down:
        def hit(self, key: str, spec: Any) -> Any:
            raise ConnectionError("redis down")

        async def ahit(self, key: str, spec: Any) -> Any:
            raise ConnectionError("redis down")

    authz = driver(shared, InMemoryFacts(), rate_limiter=Down())
    request = RequestFacts.build(
        method="POST", path="/api/widget/tickets/create", peer="198.51.100.200"
    )
    decision = run(authz.adecide(request))
    assert decision.status == 503
    assert not decision.allowed


def test_the_async_rate_limit_counts_like_the_sync_one(shared: Authorizer) -> None:
    authz = driver(shared, InMemoryFacts())
    request = RequestFacts.build(
        method="POST", path="/api/widget/tickets/create", peer="198.51.100.201"
    )
    statuses = [run(authz.adecide(request)).status for _ in range(3)]
    statuses += [authz.decide(request).status for _ in range(3)]
    assert statuses == [200] * 5 + [429]


def test_an_async_body_reader_feeds_the_webhook(shared: Authorizer) -> None:
    from twilio.request_validator import RequestValidator

    params = {"Body": "hi", "From": "+15550000000"}
    url = "https://sms.example.test/api/sms/status/a-7"
    signature = RequestValidator("tok-async").compute_signature(url, params)
    body = b"Body=hi&From=%2B15550000000"
    request = RequestFacts.build(
        method="POST",
        path="/api/sms/status/a-7",
        headers={
            "host": "sms.example.test",
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": signature,
        },
        scheme="https",
    )
    asked: list[int] = []

    async def read(limit: int) -> bytes | None:
        asked.append(limit)
        await asyncio.sleep(0)
        return body

    authz = driver(shared, InMemoryFacts())
    decision = run(authz.adecide(request, read_body=read))
    assert (decision.status, decision.reason.value) == (200, "webhook_verified")
    assert asked == [64 * 1024]
    assert not run(authz.adecide(request)).allowed  # no reader: fail closed


# --- Sync and async agree, and both agree with the oracle --------------------------------


def _sample(seed: int, count: int) -> list[tuple[World, Endpoint, dict[str, str], dict[str, Any]]]:
    rng = random.Random(seed)
    memberships: list[tuple[str, str] | None] = [None, *((r, s) for r in ROLES for s in STATUSES)]
    out = []
    for _ in range(count):
        world = World()
        mine = rng.choice(memberships)
        if mine is not None:
            world.memberships[("u-me", "ws-1")] = mine
        world.memberships[("u-other", "ws-1")] = ("member", "active")
        world.memberships[("u-target", "ws-1")] = (rng.choice(ROLES), "active")
        world.memberships[("u-me", "ws-2")] = ("owner", "active")
        vis = rng.choice(("public", "workspace", "private"))
        world.assistants["a:é~1"] = ("ws-1", vis, rng.choice(("u-me", "u-other")))
        world.chats["c-1"] = ("ws-1", "a:é~1", rng.choice(("u-me", "u-other")))
        if rng.random() < 0.3:
            world.grants.add(("u-me", "a:é~1"))
        endpoint = rng.choice(AUTHENTICATED_ENDPOINTS)
        params = {
            "assistantId": "a:é~1" if rng.random() < 0.85 else "missing",
            "chatId": "c-1" if rng.random() < 0.85 else "missing",
            "workspaceId": "ws-1",
            "userId": "u-target" if rng.random() < 0.85 else "u-nobody",
        }
        params = {k: v for k, v in params.items() if "{" + k + "}" in endpoint.template}
        how = {
            "principal_ws": rng.choice(("ws-1", "ws-2", None)),
            "header_ws": rng.choice(("ws-1", None)),
            "scopes": rng.choice((None, None, frozenset({endpoint.action}), frozenset())),
        }
        out.append((world, endpoint, params, how))
    return out


@pytest.mark.parametrize("conceal", [False, True], ids=["403", "conceal"])
def test_sync_and_async_drivers_decide_identically(conceal: bool) -> None:
    settings = load_settings(overrides={"decisions": {"conceal_hidden": conceal}})
    core = Authorizer.from_settings(settings, rate_limiter=_LIMITER).core
    sample = _sample(seed=2024 + conceal, count=300)

    def pairs() -> list[tuple[Callable[[], Decision], Callable[[], Awaitable[Decision]]]]:
        out = []
        for world, endpoint, params, how in sample:
            principal = Principal(
                user_id="u-me",
                kind=CredentialKind.SESSION,
                workspace=how["principal_ws"],
                scopes=how["scopes"],
            )
            path = endpoint.template
            for name, value in params.items():
                path = path.replace("{" + name + "}", encode_id(value))
            headers = {"x-workspace-id": how["header_ws"]} if how["header_ws"] else {}
            request = RequestFacts.build(method=endpoint.method, path=path, headers=headers)
            sync = Authorizer(core=core, facts=world.facts(), rate_limiter=_LIMITER)
            asyn = Authorizer(core=core, facts=AsyncWorld(world.facts()), rate_limiter=_LIMITER)
            out.append(
                (
                    lambda s=sync, r=request, p=principal: s.decide(r, principal=p),
                    lambda a=asyn, r=request, p=principal: a.adecide(r, principal=p),
                )
            )
        return out

    jobs = pairs()

    async def all_async() -> list[Decision]:
        return [await make() for _, make in jobs]

    async_decisions = asyncio.run(all_async())
    problems = []
    for (world, endpoint, params, how), (sync_job, _), from_async in zip(
        sample, jobs, async_decisions, strict=True
    ):
        from_sync = sync_job()
        if from_sync != from_async or from_sync.explanation != from_async.explanation:
            problems.append(f"{endpoint} {params} {how}: sync {from_sync} != async {from_async}")
            continue
        expected = oracle(
            world,
            endpoint,
            params,
            user="u-me",
            principal_workspace=how["principal_ws"],
            header_workspace=how["header_ws"],
            scopes=how["scopes"],
            conceal=conceal,
        )
        if from_sync.status != expected.status or (
            expected.reason is not None and from_sync.reason.value != expected.reason
        ):
            problems.append(f"{endpoint} {params} {how}: {from_sync.reason} vs oracle {expected}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:8])
    outcomes = {d.status for d in async_decisions}
    assert {200, 400, 403, 404} <= outcomes  # the sample is not vacuous


def test_adecide_access_equals_decide_access(shared: Authorizer) -> None:
    facts = InMemoryFacts(
        memberships=[Membership(user="u-1", workspace="ws-1", role=Role.MEMBER)],
        assistants=[
            Assistant(id="a-1", workspace="ws-1", visibility=Visibility.WORKSPACE, creator="u-9")
        ],
    )
    sync = driver(shared, facts)
    asyn = driver(shared, AsyncWorld(facts))
    principal = Principal(user_id="u-1", kind=CredentialKind.SESSION, workspace="ws-1")
    for action, kind, rid in [
        ("assistant:read", "assistant", "a-1"),
        ("assistant:delete", "assistant", "a-1"),
        ("assistant:read", "assistant", "nope"),
        ("chat:list", None, None),
        ("billing:read", "workspace", "ws-1"),
        ("no:such", None, None),
    ]:
        args: dict[str, Any] = {"principal": principal, "action": action}
        if kind:
            args.update(resource_kind=kind, resource_id=rid)
        assert sync.decide_access(**args) == run(asyn.adecide_access(**args)), action


def test_async_facts_loaded_from_a_file_path_are_not_required(tmp_path: Path) -> None:
    """With no facts at all, an empty in-memory store answers: 403, not a crash."""
    authz = Authorizer.from_settings(load_settings(), rate_limiter=_LIMITER)
    principal = Principal(user_id="u-1", kind=CredentialKind.SESSION, workspace="ws-1")
    request = RequestFacts.build(method="GET", path="/api/assistants")
    decision = run(authz.adecide(request, principal=principal))
    assert (decision.status, decision.reason.value) == (403, "not_a_member")
