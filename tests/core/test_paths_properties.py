"""Properties of path canonicality and classification.

A path that a proxy, our router and the host framework could read differently is how
"public" checks get bypassed (``/api/widget/x/../../assistants``, ``%2e%2e``, ``%2f``,
``//``, ``\\``, overlong UTF-8). These properties mutate the public widget and webhook
paths (with random, unicode ids) in every such way and require ``decide()`` to answer 400
``non_canonical_path`` before any classification: never public, never allowed, for an
anonymous caller and for an owner alike. For canonical paths, HEAD is classified as GET,
and a literal segment beats a parameter.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import load_settings
from illumichat_authz.core.envelope import (
    _COMMON_HEADER_NAMES,
    _HEADER_NAME,
    _HEADER_VALUE_BAD,
    check_envelope,
)
from illumichat_authz.errors import BadRequestError
from illumichat_authz.facts import InMemoryFacts, Membership, Resource
from illumichat_authz.paths import canonical_segments
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.request import RequestFacts
from illumichat_authz.routes import RouteMatch
from illumichat_authz.vocab import Role
from oracle import AUTHENTICATED_ENDPOINTS, PUBLIC_ENDPOINTS, WEBHOOK_ENDPOINTS, Endpoint, encode_id

MAX_PATH = 2048
FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def authz() -> Authorizer:
    """Default settings, with facts that would allow an owner everything in w1."""
    facts = InMemoryFacts(
        memberships=[Membership(user="owner", workspace="w1", role=Role.OWNER)],
    )
    return Authorizer.from_settings(load_settings(), facts=facts)


OWNER = Principal(user_id="owner", kind=CredentialKind.SESSION, workspace="w1")

# --- Paths as lists of segments of atomic tokens -----------------------------------------
# A token is one raw character or one character's whole percent-encoding, so a mutation
# inserted between tokens can never split (or complete) an escape of the original path.

Segment = list[str]

_ID_CHARS = st.characters(
    blacklist_categories=("Cc", "Cs", "Cf", "Zl", "Zp"), blacklist_characters="/\\ "
)
ids = st.text(_ID_CHARS, min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


def _tokens(value: str, *, lower_hex: bool) -> Segment:
    return [encode_id(ch, lower_hex=lower_hex) for ch in value]


@st.composite
def tokenized_paths(
    draw: st.DrawFn, endpoints: tuple[Endpoint, ...]
) -> tuple[Endpoint, list[Segment]]:
    endpoint = draw(st.sampled_from(endpoints))
    lower_hex = draw(st.booleans())
    segments: list[Segment] = []
    for seg in endpoint.template[1:].split("/"):
        if seg.startswith("{"):
            segments.append(_tokens(draw(ids), lower_hex=lower_hex))
        else:
            segments.append(list(seg))
    return endpoint, segments


def _join(segments: list[Segment]) -> str:
    return "/" + "/".join("".join(seg) for seg in segments)


def _case_variants(escape: str) -> list[str]:
    return sorted({escape, escape.upper(), escape.lower()})


# Tokens that make any segment non-canonical wherever they are inserted, whatever is next.
BAD_IN_SEGMENT = [
    # encoded '.', '/', '\\'
    *_case_variants("%2e"),
    *_case_variants("%2f"),
    *_case_variants("%5c"),
    # raw characters that must not appear: separators others honour, controls, non-ASCII
    "\\",
    ";",
    " ",
    "#",
    "?",
    '"',
    "<",
    ">",
    "`",
    "{",
    "|",
    "^",
    "\u00e9",
    "\u2028",
    *[chr(c) for c in [*range(0x20), 0x7F]],
    # encoded controls
    *[f"%{c:02X}" for c in [*range(0x20), 0x7F]],
    *[f"%{c:02x}" for c in (0x00, 0x0A, 0x0D, 0x1B, 0x7F)],
    # invalid percent-encoding
    "%zz",
    "%G0",
    "%0g",
    "%0",
    "%%",
    "%-1",
    "%+0",
    # invalid UTF-8: bytes never valid, truncated or stray sequences, surrogates, > U+10FFFF
    "%FF",
    "%fe",
    "%C3%28",
    "%80",
    "%BF",
    "%ED%A0%80",
    "%F4%90%80%80",
    # overlong encodings of '.', '/', '\\' and NUL
    "%C0%AE",
    "%c0%ae",
    "%C0%AF",
    "%C1%9C",
    "%E0%80%AE",
    "%F0%80%80%AE",
    "%C0%80",
]
# Whole segments that are dot segments, in any spelling.
DOT_SEGMENTS = [".", "..", "%2e", "%2E", ".%2e", "%2e.", "%2E%2E", "%2e%2e", "..%2f"]


@st.composite
def mutations(draw: st.DrawFn, segments: list[Segment]) -> tuple[str, str]:
    """Apply 1-3 mutations to a copy of ``segments``; return (description, raw path)."""
    segs = [list(s) for s in segments]
    done: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["token", "dot", "empty", "trailing", "long", "pct-end"]))
        if kind == "token":
            token = draw(st.sampled_from(BAD_IN_SEGMENT))
            i = draw(st.integers(0, len(segs) - 1))
            j = draw(st.integers(0, len(segs[i])))
            segs[i].insert(j, token)
            done.append(f"insert {token!r} into segment {i}")
        elif kind == "dot":
            dot = draw(st.sampled_from(DOT_SEGMENTS))
            i = draw(st.integers(0, len(segs)))
            segs.insert(i, list(dot))
            done.append(f"dot segment {dot!r} at {i}")
        elif kind == "empty":
            i = draw(st.integers(0, len(segs)))
            segs.insert(i, [])
            done.append(f"'//' at {i}")
        elif kind == "trailing":
            segs.append([])
            done.append("trailing '/'")
        elif kind == "long":
            i = draw(st.integers(0, len(segs) - 1))
            segs[i].extend("a" * (MAX_PATH + 1))
            done.append(f"over-long segment {i}")
        else:
            segs[-1].append("%")
            done.append("'%' at the end")
    return "; ".join(done), _join(segs)


@FUZZ
@given(data=st.data())
def test_no_mutated_public_path_is_public_or_allowed(
    data: st.DataObject, authz: Authorizer
) -> None:
    endpoint, segments = data.draw(tokenized_paths(PUBLIC_ENDPOINTS + WEBHOOK_ENDPOINTS))
    how, path = data.draw(mutations(segments))
    for method in {endpoint.method, "GET", "POST"}:
        decision = authz.decide(RequestFacts.build(method=method, path=path))
        assert (decision.status, decision.reason.value) == (400, "non_canonical_path"), (how, path)
        assert decision.route is None


@FUZZ
@given(data=st.data())
def test_no_mutated_path_is_allowed_even_for_an_owner(
    data: st.DataObject, authz: Authorizer
) -> None:
    endpoint, segments = data.draw(tokenized_paths(AUTHENTICATED_ENDPOINTS))
    how, path = data.draw(mutations(segments))
    request = RequestFacts.build(
        method=endpoint.method, path=path, headers={"x-workspace-id": "w1"}
    )
    decision = authz.decide(request, principal=OWNER)
    assert (decision.status, decision.reason.value) == (400, "non_canonical_path"), (how, path)


@FUZZ
@given(data=st.data())
def test_unmutated_public_paths_are_public(data: st.DataObject, authz: Authorizer) -> None:
    """The mutation property is not vacuous: the same paths, unmutated, are public."""
    endpoint, segments = data.draw(
        tokenized_paths(tuple(e for e in PUBLIC_ENDPOINTS if "{" in e.template))
    )
    decision = authz.decide(RequestFacts.build(method=endpoint.method, path=_join(segments)))
    assert (decision.status, decision.reason.value) == (200, "public")
    assert decision.route == f"{endpoint.method} {endpoint.template}"


@settings(max_examples=50, deadline=None)
@given(path=st.text(min_size=MAX_PATH + 1, max_size=MAX_PATH + 64, alphabet="abc/"))
def test_any_path_over_the_length_cap_is_refused(path: str) -> None:
    with pytest.raises(Exception, match="non-canonical request path") as info:
        canonical_segments("/" + path, max_length=MAX_PATH)
    assert getattr(info.value, "status", None) == 400


@pytest.mark.parametrize(
    "path",
    [
        "/api/widget/x/../../assistants",
        "/api/widget/%2e%2e/assistants",
        "/api/widget/a%2Fb/config",
        "//api/widget/a/config",
        "/api/widget/a/config/",
        "/api/widget/a;x=1/config",
        "/api/widget/a\\b/config",
        "/api/widget/%C0%AE%C0%AE/config",
        "/api/widget/a%00/config",
        "/api/widget/a%/config",
        "/api/widget/%E9/config",
        "api/widget/a/config",
        "/api/widget/a/config" + "x" * MAX_PATH,
    ],
)
def test_known_bypass_shapes_are_400(path: str, authz: Authorizer) -> None:
    decision = authz.decide(RequestFacts.build(method="GET", path=path))
    assert (decision.status, decision.reason.value) == (400, "non_canonical_path")


@pytest.mark.parametrize(
    "escape", ["%C2%80", "%C2%85", "%C2%9B", "%C2%9F", "%C2%AD", "%E2%80%AE", "%E2%80%A8"]
)
def test_encoded_c1_controls_are_refused(escape: str, authz: Authorizer) -> None:
    decision = authz.decide(RequestFacts.build(method="GET", path=f"/api/widget/a{escape}/config"))
    assert (decision.status, decision.reason.value) == (400, "non_canonical_path")


# --- Canonical paths: HEAD is GET; literal beats parameter --------------------------------

_LITERALS = sorted(
    {
        seg
        for e in (*PUBLIC_ENDPOINTS, *WEBHOOK_ENDPOINTS, *AUTHENTICATED_ENDPOINTS)
        for seg in e.template[1:].split("/")
        if not seg.startswith("{")
    }
)


@st.composite
def canonical_paths(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        _, segments = draw(
            tokenized_paths((*PUBLIC_ENDPOINTS, *WEBHOOK_ENDPOINTS, *AUTHENTICATED_ENDPOINTS))
        )
        return _join(segments)
    parts = draw(st.lists(st.one_of(st.sampled_from(_LITERALS), ids), min_size=0, max_size=6))
    return "/" + "/".join(encode_id(p) for p in parts)


@FUZZ
@given(path=canonical_paths())
def test_head_is_classified_as_get(path: str, authz: Authorizer) -> None:
    segments = canonical_segments(path)
    routes = authz.core.routes
    assert routes.match("HEAD", segments) == routes.match("GET", segments)
    for principal in (None, OWNER):
        head = authz.decide(RequestFacts.build(method="HEAD", path=path), principal=principal)
        get = authz.decide(RequestFacts.build(method="GET", path=path), principal=principal)
        assert (head.status, head.reason, head.route, head.action, head.params) == (
            get.status,
            get.reason,
            get.route,
            get.action,
            get.params,
        )


@dataclass(frozen=True)
class _Seen:
    route: str | None
    action: str | None
    params: tuple[tuple[str, str], ...]


def _classify(authz: Authorizer, method: str, path: str) -> _Seen:
    decision = authz.decide(RequestFacts.build(method=method, path=path))
    return _Seen(decision.route, decision.action, decision.params)


def test_the_ticket_route_beats_the_widget_parameter() -> None:
    authz = Authorizer.from_settings(load_settings())
    seen = _classify(authz, "POST", "/api/widget/tickets/create")
    assert seen == _Seen("POST /api/widget/tickets/create", "ticket:create", ())
    # Where the literal branch dead-ends, "tickets" is an assistant id like any other.
    assert _classify(authz, "POST", "/api/widget/tickets/chat") == _Seen(
        "POST /api/widget/{assistantId}/chat", "widget:chat", (("assistantId", "tickets"),)
    )
    assert _classify(authz, "GET", "/api/widget/tickets/config").params == (
        ("assistantId", "tickets"),
    )
    # The literal route is POST only: GET of it is undeclared, not widget "tickets".
    assert _classify(authz, "GET", "/api/widget/tickets/create").route is None


@FUZZ
@given(assistant=ids.filter(lambda s: s != "tickets"))
def test_create_is_a_ticket_only_under_tickets(assistant: str, authz: Authorizer) -> None:
    path = f"/api/widget/{encode_id(assistant)}/create"
    decision = authz.decide(RequestFacts.build(method="POST", path=path))
    assert decision.route is None
    assert (decision.status, decision.reason.value) == (401, "undeclared_route")


@FUZZ
@given(assistant=ids)
def test_static_routes_win_for_every_literal_template(assistant: str, authz: Authorizer) -> None:
    """Every all-literal template matches itself; a parameter never captures it."""
    for route in authz.core.routes.routes:
        if "{" not in route.template:
            match = authz.core.routes.match(route.method, canonical_segments(route.template))
            assert match is not None
            assert match.route == route
            assert dict(match.params) == {}
    # And a parameter value equal to a sibling literal still routes by the literal.
    match = authz.core.routes.match(
        "GET", canonical_segments(f"/api/assistants/{encode_id(assistant)}")
    )
    assert match is not None
    assert dict(match.params) == {"assistantId": assistant}


def test_facts_are_not_consulted_for_non_canonical_paths() -> None:
    class Exploding:
        def membership(self, user: str, workspace: str) -> Membership | None:
            raise AssertionError("looked up a membership")

        def resource(self, kind: str, id: str) -> Resource | None:
            raise AssertionError("looked up a resource")

        def has_grant(self, user: str, kind: str, id: str) -> bool:
            raise AssertionError("looked up a grant")

    authz = Authorizer.from_settings(load_settings(), facts=Exploding())
    decision = authz.decide(
        RequestFacts.build(method="GET", path="/api/assistants/a/../b"), principal=OWNER
    )
    assert (decision.status, decision.reason.value) == (400, "non_canonical_path")


# --- the fast paths equal the slow ones ----------------------------------------------------

_PATH_ALPHABET = st.sampled_from(
    [
        "/",
        "api",
        "widget",
        "assistants",
        "tickets",
        "create",
        "a1",
        "%2e",
        "%2F",
        "%41",
        "..",
        ".",
        ";",
        "\\",
        "%",
        "%E6%97%A5",
        "%C0%AE",
        "x",
        "",
        "%0a",
        "~",
    ]
)


@FUZZ
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"]),
    parts=st.lists(_PATH_ALPHABET, max_size=8),
    max_length=st.sampled_from([8, 30, 2048]),
)
def test_remembered_classification_equals_a_fresh_one(
    method: str, parts: list[str], max_length: int, authz: Authorizer
) -> None:
    routes = authz.core.routes
    path = "/" + "/".join(parts)

    def fresh() -> object:
        try:
            return routes.match(method, canonical_segments(path, max_length=max_length))
        except BadRequestError as exc:
            return exc.reason

    def remembered() -> object:
        try:
            match = routes.classify(method, path, max_length)
        except BadRequestError as exc:
            return exc.reason
        return None if match is None else RouteMatch(match.route, dict(match.params))

    expected = fresh()
    if isinstance(expected, RouteMatch):
        expected = RouteMatch(expected.route, dict(expected.params))
    assert remembered() == expected  # first time: computed
    assert remembered() == expected  # second time: from the memo
    # A longer cap elsewhere never lets a too-long path through from the memo.
    with contextlib.suppress(BadRequestError):
        routes.classify(method, path, 10_000)
    assert remembered() == expected


_HEADER_VALUES = st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1"))


@FUZZ
@given(values=st.lists(_HEADER_VALUES, max_size=4))
def test_envelope_refuses_exactly_the_header_values_the_regex_refuses(
    authz: Authorizer, values: list[str]
) -> None:
    # The envelope checks all values at once (joined, Latin-1 fast path): it must refuse
    # exactly the requests where the regex refuses one of the values.
    headers = tuple((f"x-h{i}", value) for i, value in enumerate(values))
    request = RequestFacts(method="GET", path="/", headers=headers)
    try:
        check_envelope(request, authz.core.routes.methods)
        accepted = True
    except BadRequestError:
        accepted = False
    assert accepted == all(_HEADER_VALUE_BAD.search(value) is None for value in values)


def test_every_common_header_name_is_a_valid_lower_case_token() -> None:
    # The envelope skips the token regex for these names: each must pass it anyway.
    for name in _COMMON_HEADER_NAMES:
        assert _HEADER_NAME.match(name), name
