"""Hypothesis strategies for fuzzing services that use illumichat_authz.

``paths()`` draws raw request paths near the IllumiChat route table (and the classic
traversal and encoding tricks); ``malformed_credentials()`` draws one credential header
that must never authenticate; ``principals()`` draws verified callers; ``requests()``
draws whole :class:`~illumichat_authz.request.RequestFacts`. Combine them with your own
endpoint: whatever is drawn, the answer must be a documented status, never a 500 or an
allow of an authenticated route without a valid credential.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from hypothesis import strategies as st

from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.request import RequestFacts

__all__ = ["malformed_credentials", "paths", "principals", "requests"]

_IDS = st.sampled_from(["a1", "a-pub", "w1", "c1", "alice", "x" * 40, "%2e%2e", "..", "0"])
_TEMPLATES = (
    "/api/assistants",
    "/api/assistants/{}",
    "/api/assistants/{}/grants",
    "/api/assistants/{}/chats",
    "/api/chats",
    "/api/chats/{}",
    "/api/workspaces/{}",
    "/api/workspaces/{}/members",
    "/api/workspaces/{}/members/{}",
    "/api/workspaces/{}/settings",
    "/api/workspaces/{}/billing",
    "/api/widget/{}/config",
    "/api/widget/tickets/create",
    "/api/sms/webhook/{}",
)
_TRICKS = (
    "/api/assistants/../workspaces/w1/billing",
    "/api/assistants/%2e%2e/x",
    "/api/assistants/a1%2fgrants",
    "/api//assistants",
    "/api/assistants/",
    "/API/assistants",
    "/api/assistants/a1;x=1",
    "/api/widget/a1/config/../../../workspaces/w1",
    "/api/widget/%61%31/config",
    "/api/assistants/a1%00",
    "/%2e/api/chats",
    "//api/chats",
    "/api/widget/a1/config\\..\\..",
    "",
    "*",
)


def paths() -> st.SearchStrategy[str]:
    """Raw (percent-encoded, as on the wire) request paths, mostly near real routes."""

    def fill(template: str, ids: Sequence[str]) -> str:
        return template.format(*ids[: template.count("{}")])

    templated = st.builds(fill, st.sampled_from(_TEMPLATES), st.lists(_IDS, min_size=2, max_size=2))
    segments = st.lists(
        st.text(alphabet="abc.%2F/\\;:@-_~ ", min_size=0, max_size=8), min_size=1, max_size=5
    ).map(lambda parts: "/" + "/".join(parts))
    return st.one_of(templated, st.sampled_from(_TRICKS), segments)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _fake_jwt(header: dict[str, object], claims: dict[str, object], sig: bytes) -> str:
    return ".".join(
        (_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(sig))
    )


def malformed_credentials() -> st.SearchStrategy[tuple[str, str]]:
    """One ``(header name, value)`` that carries a credential which must never verify."""
    jwts = st.builds(
        _fake_jwt,
        st.sampled_from(
            [
                {"alg": "none"},
                {"alg": "HS256", "kid": "test"},
                {"alg": "RS256", "kid": "nope"},
                {"alg": "RS256"},
                {"alg": "ES256", "kid": "../../etc"},
            ]
        ),
        st.fixed_dictionaries({"sub": st.sampled_from(["alice", "", "x" * 300])}),
        st.binary(max_size=64),
    )
    api_keys = st.one_of(
        st.just("ick_"),
        st.text(alphabet="0123456789ABCDEFabcdef_", min_size=1, max_size=70).map(
            lambda s: "ick_" + s
        ),
        st.just("ick_AAAAAAAAAAAA_" + "A" * 49),
    )
    junk = st.text(min_size=0, max_size=64).filter(lambda s: "\r" not in s and "\n" not in s)
    authorization = st.one_of(
        jwts.map(lambda t: f"Bearer {t}"),
        api_keys.map(lambda t: f"Bearer {t}"),
        junk.map(lambda t: f"Bearer {t}"),
        st.sampled_from(["Bearer", "Bearer  ", "Basic YWxpY2U6cHc=", "bearer a b", "Token x"]),
    )
    cookies = st.one_of(
        junk.map(lambda t: f"authjs.session-token={t}"),
        jwts.map(lambda t: f"authjs.session-token={t}"),
        st.builds(
            lambda a, b: f"authjs.session-token.0={a}; authjs.session-token.1={b}",
            junk.filter(lambda s: ";" not in s),
            junk.filter(lambda s: ";" not in s),
        ),
        st.just("authjs.session-token=eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2Q0JDLUhTNTEyIn0....."),
    )
    return st.one_of(
        authorization.map(lambda v: ("authorization", v)),
        cookies.map(lambda v: ("cookie", v)),
    )


def principals(
    *,
    users: Sequence[str] = ("alice", "bob", "carol", "mallory"),
    workspaces: Sequence[str] = ("w1", "w2"),
) -> st.SearchStrategy[Principal]:
    """Verified callers of every credential kind, optionally scoped or workspace-bound."""
    from illumichat_authz.credentials.apikeys import SCOPE_PATTERN

    scopes = st.one_of(
        st.none(),
        st.frozensets(
            st.sampled_from(["assistant:read", "assistant:list", "chat:create", "chat:read"]),
            max_size=3,
        ),
    )

    def build(
        user: str, kind: CredentialKind, ws: str | None, narrowed: frozenset[str] | None
    ) -> Principal:
        is_key = kind is CredentialKind.API_KEY
        if narrowed is not None:
            narrowed = frozenset(s for s in narrowed if SCOPE_PATTERN.fullmatch(s))
        return Principal(
            user_id=user,
            kind=kind,
            workspace=ws if ws is not None or not is_key else workspaces[0],
            scopes=narrowed if is_key else None,
            workspace_bound=is_key,
            credential_id="strategy",
        )

    return st.builds(
        build,
        st.sampled_from(list(users)),
        st.sampled_from(list(CredentialKind)),
        st.one_of(st.none(), st.sampled_from(list(workspaces))),
        scopes,
    )


def requests(
    *, credentials: st.SearchStrategy[tuple[str, str]] | None = None
) -> st.SearchStrategy[RequestFacts]:
    """Whole requests: a method, a path from :func:`paths`, maybe a (malformed) credential,
    maybe an ``X-Workspace-Id``, and a few stray headers."""
    creds = credentials if credentials is not None else malformed_credentials()
    extra = st.lists(
        st.tuples(
            st.sampled_from(["x-workspace-id", "x-forwarded-for", "origin", "x-request-id"]),
            st.sampled_from(["w1", "w2", "1.2.3.4", "https://evil.example", "", "a" * 300]),
        ),
        max_size=3,
    )
    return st.builds(
        lambda method, path, query, cred, more: RequestFacts.build(
            method=method,
            path=path,
            query=query,
            headers=[("host", "api.illumichat.test"), *([cred] if cred else []), *more],
            peer="203.0.113.20",
            scheme="https",
        ),
        st.sampled_from(["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS", "PUT", "get"]),
        paths(),
        st.sampled_from(["", "x=1", "a=%00", "redirect=//evil"]),
        st.one_of(st.none(), creds),
        extra,
    )
