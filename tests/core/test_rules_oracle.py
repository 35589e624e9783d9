"""The shipped policy against an independent oracle of the rules (``tests/oracle.py``).

The oracle restates the IllumiChat role and visibility tables in plain Python; these tests
build worlds of facts, ask ``Authorizer.decide`` about every authenticated endpoint with an
already-verified principal, and compare the status (and the reason, where the rules fix
it) with the oracle's answer. The first test enumerates the whole space exhaustively;
the hypothesis test draws from the same space with random, unicode and odd ids
(percent-encoded in the path) to show that ids never matter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from illumichat_authz.authorizer import Authorizer, build_core
from illumichat_authz.config import load_settings
from illumichat_authz.core import Core
from illumichat_authz.decision import Decision
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.request import RequestFacts
from illumichat_authz.stores.ratelimit import RateLimiter
from oracle import (
    AUTHENTICATED_ENDPOINTS,
    ROLES,
    STATUSES,
    UNNAMED_ROLE,
    Endpoint,
    Expected,
    World,
    encode_id,
    oracle,
)

#: Deny reasons that say "you may not" without naming a missing fact.
GENERIC_403 = {"insufficient_role", "membership_inactive", "not_visible", "policy_denied"}
ALL_ACTIONS = frozenset(e.action for e in AUTHENTICATED_ENDPOINTS)
VISIBILITIES = ("public", "workspace", "private")
_LIMITER = RateLimiter()


@pytest.fixture(scope="module")
def cores() -> dict[bool, Core]:
    """The shipped policy, with existence concealed (True) or not (False)."""
    return {
        conceal: build_core(load_settings(overrides={"decisions": {"conceal_hidden": conceal}}))
        for conceal in (False, True)
    }


@dataclass(frozen=True, slots=True)
class Ids:
    caller: str = "u-caller"
    other: str = "u-other"
    target: str = "u-target"
    ws: str = "ws-1"
    elsewhere: str = "ws-2"
    assistant: str = "a-1"
    chat: str = "c-1"
    missing: str = "x-missing"


@dataclass(frozen=True, slots=True)
class Case:
    """One point of the space: who the caller is, what exists, and how they ask."""

    endpoint: Endpoint
    role: str | None  # None: no membership in the workspace
    status: str
    vis: str
    creator: bool
    grant: bool
    chat_creator: bool
    target: str | None  # the target membership's role, or None when it is missing
    resource_missing: bool
    scopes: frozenset[str] | None
    ws_source: str  # principal | header | header-overrides | none | elsewhere
    conceal: bool
    #: An API key bound to the principal's workspace (``workspace_bound``).
    bound: bool = False

    def world(self, ids: Ids) -> World:
        world = World()
        if self.role is not None:
            world.memberships[(ids.caller, ids.ws)] = (self.role, self.status)
        # Owning another workspace must not help in this one.
        world.memberships[(ids.caller, ids.elsewhere)] = ("owner", "active")
        world.memberships[(ids.other, ids.ws)] = ("member", "active")
        if self.target is not None:
            world.memberships[(ids.target, ids.ws)] = (self.target, "active")
        creator = ids.caller if self.creator else ids.other
        world.assistants[ids.assistant] = (ids.ws, self.vis, creator)
        chat_creator = ids.caller if self.chat_creator else ids.other
        world.chats[ids.chat] = (ids.ws, ids.assistant, chat_creator)
        if self.grant:
            world.grants.add((ids.caller, ids.assistant))
        return world

    def params(self, ids: Ids) -> dict[str, str]:
        params = {"workspaceId": ids.ws, "userId": ids.target}
        params["assistantId"] = ids.missing if self.resource_missing else ids.assistant
        params["chatId"] = ids.missing if self.resource_missing else ids.chat
        return {k: v for k, v in params.items() if "{" + k + "}" in self.endpoint.template}

    def workspaces(self, ids: Ids) -> tuple[str | None, str | None]:
        """(principal workspace, X-Workspace-Id header)."""
        return {
            "principal": (ids.ws, None),
            "header": (None, ids.ws),
            "header-overrides": (ids.elsewhere, ids.ws),
            "none": (None, None),
            "elsewhere": (ids.elsewhere, None),
        }[self.ws_source]


def run_case(
    case: Case, core: Core, ids: Ids, *, lower_hex: bool = False, sub: bool = True
) -> tuple[Decision, Expected]:
    world = case.world(ids)
    params = case.params(ids)
    principal_ws, header_ws = case.workspaces(ids)
    principal = Principal(
        user_id=ids.caller,
        kind=CredentialKind.SESSION if case.scopes is None else CredentialKind.API_KEY,
        workspace=principal_ws,
        scopes=case.scopes,
        workspace_bound=case.bound,
    )
    path = case.endpoint.template
    for name, value in params.items():
        path = path.replace(
            "{" + name + "}", encode_id(value, keep_sub_delims=sub, lower_hex=lower_hex)
        )
    headers = {"x-workspace-id": header_ws} if header_ws is not None else {}
    request = RequestFacts.build(method=case.endpoint.method, path=path, headers=headers)
    # One shared limiter: the default one starts a storage thread per Authorizer.
    authz = Authorizer(core=core, facts=world.facts(), rate_limiter=_LIMITER)
    decision = authz.decide(request, principal=principal)
    return decision, expected_for(case, ids)


def expected_for(case: Case, ids: Ids) -> Expected:
    principal_ws, header_ws = case.workspaces(ids)
    return oracle(
        case.world(ids),
        case.endpoint,
        case.params(ids),
        user=ids.caller,
        principal_workspace=principal_ws,
        header_workspace=header_ws,
        scopes=case.scopes,
        workspace_bound=case.bound,
        conceal=case.conceal,
    )


def disagreement(decision: Decision, expected: Expected) -> str | None:
    if decision.status != expected.status:
        return f"status {decision.status} ({decision.reason.value}), oracle says {expected}"
    reason = decision.reason.value
    if expected.reason is not None and reason != expected.reason:
        return f"reason {reason}, oracle says {expected.reason}"
    if expected.reason is None and reason not in GENERIC_403:
        return f"reason {reason} for a plain deny (expected one of {sorted(GENERIC_403)})"
    return None


def _memberships() -> Iterator[tuple[str | None, str]]:
    yield None, "active"
    yield from product(ROLES, STATUSES)
    yield UNNAMED_ROLE, "active"  # a role the policy does not name: denied, never an error


def cases(endpoint: Endpoint, conceal: bool) -> Iterator[Case]:
    kind = endpoint.resource[0] if endpoint.resource else None
    # (scopes, bound): a session; API keys with and without the scope; a bound key.
    credentials: tuple[tuple[frozenset[str] | None, bool], ...] = (
        (None, False),
        (frozenset({endpoint.action}), False),
        (ALL_ACTIONS - {endpoint.action}, False),
        (frozenset({endpoint.action}), True),
    )
    chat_creators = (False, True) if kind == "chat" else (False,)
    targets: tuple[str | None, ...] = ("member", "owner", None) if kind == "member" else ("member",)
    missing = (False, True) if kind in ("assistant", "chat") else (False,)
    sources = (
        ("principal", "header", "header-overrides", "none") if kind is None else ("principal",)
    )
    every = (*sources, "elsewhere")
    for (role, status), vis, creator, grant, chat_creator, target, gone, cred, source in product(
        _memberships(),
        VISIBILITIES,
        (False, True),
        (False, True),
        chat_creators,
        targets,
        missing,
        credentials,
        every,
    ):
        scopes, bound = cred
        if source == "elsewhere" and not bound:
            continue
        yield Case(
            endpoint,
            role,
            status,
            vis,
            creator,
            grant,
            chat_creator,
            target,
            gone,
            scopes,
            source,
            conceal,
            bound,
        )


@pytest.mark.parametrize("conceal", [False, True], ids=["403", "conceal"])
@pytest.mark.parametrize(
    "endpoint", AUTHENTICATED_ENDPOINTS, ids=lambda e: f"{e.method} {e.template}"
)
def test_every_point_agrees_with_the_oracle(
    endpoint: Endpoint, conceal: bool, cores: dict[bool, Core]
) -> None:
    ids = Ids()
    problems: list[str] = []
    count = 0
    for case in cases(endpoint, conceal):
        count += 1
        decision, expected = run_case(case, cores[conceal], ids)
        why = disagreement(decision, expected)
        if why is not None:
            problems.append(f"{case}: {why}")
    assert count > 0
    assert not problems, f"{len(problems)}/{count} disagree; first ones:\n" + "\n".join(
        problems[:15]
    )


def test_the_space_covers_every_outcome() -> None:
    """The enumeration is not vacuous: every status and exact reason the oracle knows occurs."""
    seen: set[tuple[int, str | None]] = set()
    for endpoint, conceal in product(AUTHENTICATED_ENDPOINTS, (False, True)):
        for case in cases(endpoint, conceal):
            expected = expected_for(case, Ids())
            seen.add((expected.status, expected.reason))
    assert seen == {
        (200, "allowed"),
        (400, "missing_workspace"),
        (403, None),
        (403, "not_a_member"),
        (403, "scope_not_granted"),
        (403, "workspace_mismatch"),
        (404, "not_found"),
    }


# --- A few cases spelled out, as the issue words them ---------------------------------


def _one(
    cores: dict[bool, Core], endpoint_action: str, **changes: object
) -> tuple[Decision, Expected]:
    endpoint = next(e for e in AUTHENTICATED_ENDPOINTS if e.action == endpoint_action)
    base: dict[str, object] = {
        "endpoint": endpoint,
        "role": "member",
        "status": "active",
        "vis": "workspace",
        "creator": False,
        "grant": False,
        "chat_creator": False,
        "target": "member",
        "resource_missing": False,
        "scopes": None,
        "ws_source": "principal",
        "conceal": False,
    }
    base.update(changes)
    case = Case(**base)  # type: ignore[arg-type]
    return run_case(case, cores[bool(base["conceal"])], Ids())


def test_a_granted_guest_may_read_a_private_assistant_but_not_chat_with_it(
    cores: dict[bool, Core],
) -> None:
    read, _ = _one(cores, "assistant:read", role="guest", vis="private", grant=True)
    chat, _ = _one(cores, "chat:create", role="guest", vis="private", grant=True)
    assert (read.status, chat.status) == (200, 403)
    assert chat.reason.value == "insufficient_role"


def test_an_inactive_membership_sees_public_assistants_only(cores: dict[bool, Core]) -> None:
    for status in ("invited", "suspended"):
        public, _ = _one(cores, "assistant:read", role="owner", status=status, vis="public")
        ws, _ = _one(cores, "assistant:read", role="owner", status=status, vis="workspace")
        listing, _ = _one(cores, "assistant:list", role="owner", status=status)
        billing, _ = _one(cores, "billing:read", role="owner", status=status)
        assert (public.status, ws.status, listing.status, billing.status) == (200, 403, 200, 403)
        assert billing.reason.value == "membership_inactive"


def test_admins_never_change_owners_but_owners_do(cores: dict[bool, Core]) -> None:
    admin, _ = _one(cores, "member:remove", role="admin", target="owner")
    owner, _ = _one(cores, "member:remove", role="owner", target="owner")
    plain, _ = _one(cores, "member:update_role", role="admin", target="member")
    assert (admin.status, owner.status, plain.status) == (403, 200, 200)


def test_missing_and_hidden_look_the_same_when_concealed(cores: dict[bool, Core]) -> None:
    missing, _ = _one(cores, "assistant:read", resource_missing=True, conceal=True)
    hidden, _ = _one(cores, "assistant:read", role="member", vis="private", conceal=True)
    shown, _ = _one(cores, "assistant:read", role="member", vis="private", conceal=False)
    assert (
        (missing.status, missing.reason.value)
        == (hidden.status, hidden.reason.value)
        == (404, "not_found")
    )
    assert missing.message == hidden.message
    assert (shown.status, shown.reason.value) == (403, "not_visible")


def test_no_membership_is_not_a_member(cores: dict[bool, Core]) -> None:
    for endpoint in AUTHENTICATED_ENDPOINTS:
        decision, _ = _one(cores, endpoint.action, role=None)
        assert (decision.status, decision.reason.value) == (403, "not_a_member"), endpoint


# --- The same space with random ids: ids must not matter ----------------------------

_ID_CHARS = st.characters(
    blacklist_categories=("Cc", "Cs", "Cf", "Zl", "Zp"), blacklist_characters="/\\ "
)
_ODD_IDS = st.sampled_from(
    [
        "tickets",
        "create",
        "...",
        ".a",
        "a.",
        "%",
        "%2e",
        "%2F",
        "a;b",
        "~",
        "0",
        "-",
        "null",
        "é",
        "\uff45",
        "x" * 256,
    ]
)
ids_strategy = st.one_of(
    st.text(_ID_CHARS, min_size=1, max_size=16),
    st.text("abcXYZ019-._~!$&'()*+,=:@%;?#[]", min_size=1, max_size=12),
    _ODD_IDS,
).filter(lambda s: s not in (".", ".."))


@st.composite
def random_ids(draw: st.DrawFn) -> Ids:
    users = draw(st.lists(ids_strategy, min_size=3, max_size=3, unique=True))
    workspaces = draw(st.lists(ids_strategy, min_size=2, max_size=2, unique=True))
    assistant, missing_a = draw(st.lists(ids_strategy, min_size=2, max_size=2, unique=True))
    chat = draw(ids_strategy.filter(lambda c: c != missing_a))
    return Ids(
        users[0], users[1], users[2], workspaces[0], workspaces[1], assistant, chat, missing_a
    )


def _header_safe(value: str) -> bool:
    # HTTP header values are visible ASCII here; the core strips the edges of the value.
    return value.isascii() and value.isprintable() and value.strip() == value


@st.composite
def random_cases(draw: st.DrawFn) -> tuple[Case, Ids]:
    ids = draw(random_ids())
    endpoint = draw(st.sampled_from(AUTHENTICATED_ENDPOINTS))
    role, status = draw(st.sampled_from(list(_memberships())))
    source = draw(st.sampled_from(("principal", "header", "header-overrides", "none", "elsewhere")))
    if source.startswith("header") and not _header_safe(ids.ws):
        source = "principal"
    scopes = draw(
        st.one_of(
            st.none(), st.frozensets(st.sampled_from(sorted(ALL_ACTIONS))), st.just(ALL_ACTIONS)
        )
    )
    case = Case(
        endpoint=endpoint,
        role=role,
        status=status,
        vis=draw(st.sampled_from(VISIBILITIES)),
        creator=draw(st.booleans()),
        grant=draw(st.booleans()),
        chat_creator=draw(st.booleans()),
        target=draw(st.sampled_from([*ROLES, None])),
        resource_missing=draw(st.booleans()),
        scopes=scopes,
        ws_source=source,
        conceal=draw(st.booleans()),
        bound=scopes is not None and draw(st.booleans()),
    )
    return case, ids


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=random_cases(), lower_hex=st.booleans(), sub=st.booleans())
def test_random_ids_agree_with_the_oracle(
    drawn: tuple[Case, Ids], lower_hex: bool, sub: bool, cores: dict[bool, Core]
) -> None:
    case, ids = drawn
    decision, expected = run_case(case, cores[case.conceal], ids, lower_hex=lower_hex, sub=sub)
    why = disagreement(decision, expected)
    assert why is None, f"{case} {ids}: {why}"
