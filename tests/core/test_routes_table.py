"""The shipped route table classifies every documented endpoint as the page states it.

Public widget endpoints pass without a credential; the two SMS webhooks need a Twilio
signature (checked here against signatures computed by twilio's own
``RequestValidator``); everything else is authenticated with the action the oracle names.
Undeclared routes are 401 for anonymous callers and 403 for authenticated ones unless the
host opts in; CORS preflights pass unless turned off; and a bad route table fails at
start-up with ``ConfigurationError`` naming the route.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import load_settings
from illumichat_authz.decision import Decision
from illumichat_authz.errors import ConfigurationError
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.request import RequestFacts
from oracle import AUTHENTICATED_ENDPOINTS, PUBLIC_ENDPOINTS, WEBHOOK_ENDPOINTS, Endpoint

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
USER = Principal(user_id="u1", kind=CredentialKind.SESSION, workspace="w1")
TWILIO_TOKEN = "twilio-test-auth-token-0123456789"
BASE_URL = "https://api.example.test"
SAMPLE_PARAMS = {"assistantId": "asst_42", "chatId": "chat_7", "workspaceId": "w1", "userId": "u2"}


def _authz(**sections: dict[str, Any]) -> Authorizer:
    return Authorizer.from_settings(load_settings(overrides=sections))


def _ask(
    authz: Authorizer,
    method: str,
    path: str,
    *,
    principal: Principal | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Decision:
    request = RequestFacts.build(method=method, path=path, headers=headers or {}, body=body)
    return authz.decide(request, principal=principal)


def _sample_path(endpoint: Endpoint) -> str:
    names = [n for n in SAMPLE_PARAMS if "{" + n + "}" in endpoint.template]
    return endpoint.path(**{n: SAMPLE_PARAMS[n] for n in names})


def _id(endpoint: Endpoint) -> str:
    return f"{endpoint.method} {endpoint.template}"


# --- The documented endpoints ------------------------------------------------------------


def test_the_table_declares_exactly_the_documented_endpoints() -> None:
    authz = _authz()
    declared = {
        (r.method, r.template, r.route_class.value, r.action) for r in authz.core.routes.routes
    }
    documented = {
        *((e.method, e.template, "public", e.action) for e in PUBLIC_ENDPOINTS),
        *((e.method, e.template, "webhook:twilio", e.action) for e in WEBHOOK_ENDPOINTS),
        *((e.method, e.template, "authenticated", e.action) for e in AUTHENTICATED_ENDPOINTS),
    }
    assert declared == documented


@pytest.mark.parametrize("endpoint", PUBLIC_ENDPOINTS, ids=_id)
def test_public_endpoints_need_no_credential(endpoint: Endpoint) -> None:
    decision = _ask(_authz(), endpoint.method, _sample_path(endpoint))
    assert (decision.status, decision.reason.value) == (200, "public")
    assert (decision.route, decision.route_class, decision.action) == (
        _id(endpoint),
        "public",
        endpoint.action,
    )


def test_the_ticket_endpoint_is_rate_limited_per_client() -> None:
    authz = _authz()
    path = "/api/widget/tickets/create"
    statuses = [_ask(authz, "POST", path).status for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    limited = _ask(authz, "POST", path)
    assert limited.reason.value == "rate_limited"
    assert any(name.lower() == "retry-after" for name, _ in limited.headers)
    # Widget config is not rate limited.
    assert {_ask(authz, "GET", "/api/widget/a/config").status for _ in range(10)} == {200}


@pytest.mark.parametrize("endpoint", WEBHOOK_ENDPOINTS, ids=_id)
def test_webhooks_need_a_twilio_signature(endpoint: Endpoint) -> None:
    path = _sample_path(endpoint)
    params = {"From": "+15550001111", "Body": "hello", "MessageSid": "SM123"}
    body = urlencode(params).encode()
    good = RequestValidator(TWILIO_TOKEN).compute_signature(BASE_URL + path, params)
    authz = _authz(twilio={"auth_tokens": [TWILIO_TOKEN], "public_base_url": BASE_URL})
    form = {"content-type": "application/x-www-form-urlencoded"}

    signed = _ask(authz, "POST", path, headers={**form, "x-twilio-signature": good}, body=body)
    assert (signed.status, signed.reason.value) == (200, "webhook_verified")
    assert (signed.route_class, signed.action) == ("webhook:twilio", endpoint.action)

    unsigned = _ask(authz, "POST", path, headers=form, body=body)
    forged = _ask(
        authz, "POST", path, headers={**form, "x-twilio-signature": good[:-4] + "AAA="}, body=body
    )
    tampered = _ask(
        authz, "POST", path, headers={**form, "x-twilio-signature": good}, body=body + b"&x=1"
    )
    for decision in (unsigned, forged, tampered):
        assert (decision.status, decision.reason.value) == (403, "invalid_signature")
    # A session does not replace the signature.
    with_session = _ask(authz, "POST", path, principal=USER, headers=form, body=body)
    assert with_session.status == 403
    # Without any configured token, nothing verifies.
    assert (
        _ask(_authz(), "POST", path, headers={**form, "x-twilio-signature": good}, body=body).status
        == 403
    )


@pytest.mark.parametrize("endpoint", AUTHENTICATED_ENDPOINTS, ids=_id)
def test_authenticated_endpoints_need_a_credential(endpoint: Endpoint) -> None:
    decision = _ask(_authz(), endpoint.method, _sample_path(endpoint))
    assert (decision.status, decision.reason.value) == (401, "authentication_required")
    assert (decision.route, decision.route_class, decision.action) == (
        _id(endpoint),
        "authenticated",
        endpoint.action,
    )
    assert dict(decision.headers)["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize("endpoint", AUTHENTICATED_ENDPOINTS, ids=_id)
def test_authenticated_endpoints_name_their_action_and_resource(endpoint: Endpoint) -> None:
    """With a principal (and no facts) each reaches the policy with the right action."""
    decision = _ask(_authz(), endpoint.method, _sample_path(endpoint), principal=USER)
    assert decision.action == endpoint.action
    if endpoint.resource and endpoint.resource[0] in ("assistant", "chat"):
        assert (decision.status, decision.reason.value) == (404, "not_found")
    else:
        assert (decision.status, decision.reason.value) == (403, "not_a_member")
    if endpoint.resource:
        assert decision.resource is not None
        assert decision.resource.kind == endpoint.resource[0]
        assert decision.resource.id == SAMPLE_PARAMS[endpoint.resource[1]]


# --- Undeclared routes -------------------------------------------------------------------

UNDECLARED = [
    ("GET", "/api/unknown"),
    ("GET", "/"),
    ("PUT", "/api/assistants"),
    ("POST", "/api/widget/a/config"),
    ("GET", "/api/widget/a/chat"),
    ("GET", "/api/assistants/a/b/c"),
    ("DELETE", "/api/chats"),
    ("GET", "/api/sms/webhook/a"),
]


@pytest.mark.parametrize(("method", "path"), UNDECLARED)
def test_undeclared_routes_are_denied_by_default(method: str, path: str) -> None:
    authz = _authz()
    anonymous = _ask(authz, method, path)
    assert (anonymous.status, anonymous.reason.value, anonymous.route) == (
        401,
        "undeclared_route",
        None,
    )
    assert "WWW-Authenticate" in dict(anonymous.headers)
    signed_in = _ask(authz, method, path, principal=USER)
    assert (signed_in.status, signed_in.reason.value) == (403, "undeclared_route")


@pytest.mark.parametrize(("method", "path"), UNDECLARED)
def test_undeclared_routes_can_be_opened_to_authenticated_callers(method: str, path: str) -> None:
    authz = _authz(routes={"undeclared": "authenticated"})
    assert _ask(authz, method, path, principal=USER).status == 200
    anonymous = _ask(authz, method, path)
    assert (anonymous.status, anonymous.reason.value) == (401, "undeclared_route")


@pytest.mark.parametrize("undeclared", ["deny", "authenticated"])
def test_an_unknown_method_is_400_even_where_undeclared_routes_are_open(undeclared: str) -> None:
    # Methods are case-sensitive: "get" is no method of ours, whatever the route mode.
    authz = _authz(routes={"undeclared": undeclared})
    for method in ("get", "BREW"):
        decision = _ask(authz, method, "/api/assistants", principal=USER)
        assert (decision.status, decision.reason.value) == (400, "bad_method")


def test_opening_undeclared_routes_does_not_open_declared_ones() -> None:
    authz = _authz(routes={"undeclared": "authenticated"})
    decision = _ask(authz, "DELETE", "/api/workspaces/w1", principal=USER)
    assert (decision.status, decision.reason.value) == (403, "not_a_member")


# --- CORS preflight ----------------------------------------------------------------------

PREFLIGHT = {"origin": "https://app.example.test", "access-control-request-method": "PATCH"}


@pytest.mark.parametrize("path", ["/api/assistants/a1", "/api/widget/a/config", "/api/nowhere"])
def test_preflight_passes_by_default(path: str) -> None:
    decision = _ask(_authz(), "OPTIONS", path, headers=PREFLIGHT)
    assert (decision.status, decision.reason.value) == (200, "preflight")


@pytest.mark.parametrize("path", ["/api/assistants/a1", "/api/widget/a/config", "/api/nowhere"])
def test_preflight_can_be_turned_off(path: str) -> None:
    decision = _ask(_authz(routes={"allow_preflight": False}), "OPTIONS", path, headers=PREFLIGHT)
    assert (decision.status, decision.reason.value) == (401, "undeclared_route")


def test_options_without_a_preflight_header_is_not_a_preflight() -> None:
    decision = _ask(_authz(), "OPTIONS", "/api/assistants/a1", headers={"origin": "https://x.test"})
    assert (decision.status, decision.reason.value) == (401, "undeclared_route")


def test_a_preflight_on_a_non_canonical_path_is_still_400() -> None:
    decision = _ask(_authz(), "OPTIONS", "/api/widget/../assistants", headers=PREFLIGHT)
    assert (decision.status, decision.reason.value) == (400, "non_canonical_path")


# --- Bad route tables fail at start-up, naming the route --------------------------------

SHIPPED_ROUTES = len(tomllib.loads((REPO_POLICIES / "routes.toml").read_text("utf-8"))["route"])
NEW = SHIPPED_ROUTES + 1  # the number of a route appended to the shipped table

BAD_ROUTES: dict[str, tuple[str, str]] = {
    # name: (appended TOML, a fragment the error message must contain)
    "duplicate route": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/widget/{assistantId}/config"\n'
        'class = "public"\naction = "widget:config"\n',
        "shadows",
    ),
    "shadowed by another parameter name": (
        '[[route]]\nmethods = ["PUT"]\npath = "/api/assistants/{id}"\nclass = "authenticated"\n'
        'action = "assistant:update"\nresource = { kind = "assistant", param = "id" }\n',
        "{id}",
    ),
    "unknown class": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/x"\nclass = "private"\naction = "x:y"\n',
        "class must be one of",
    ),
    "bad rate_limit": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/x"\nclass = "public"\naction = "x:y"\n'
        'rate_limit = "lots"\n',
        "rate_limit",
    ),
    "undeclared resource kind": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/docs/{d}"\nclass = "authenticated"\n'
        'action = "assistant:read"\nresource = { kind = "document", param = "d" }\n',
        "resource kind 'document' is not declared in [resources]",
    ),
    "resource param not in the path": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/x/{a}"\nclass = "authenticated"\n'
        'action = "assistant:read"\nresource = { kind = "assistant", param = "b" }\n',
        "'b' not in the path",
    ),
    "missing action": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/x"\nclass = "public"\n',
        "missing key 'action'",
    ),
    "missing path": (
        '[[route]]\nmethods = ["GET"]\nclass = "public"\naction = "x:y"\n',
        "missing key 'path'",
    ),
    "missing methods": (
        '[[route]]\npath = "/api/x"\nclass = "public"\naction = "x:y"\n',
        "missing key 'methods'",
    ),
    "unknown key": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/x"\nclass = "public"\naction = "x:y"\n'
        "public = true\n",
        "unknown key",
    ),
    "lower-case method": (
        '[[route]]\nmethods = ["get"]\npath = "/api/x"\nclass = "public"\naction = "x:y"\n',
        "bad method",
    ),
    "HEAD declared": (
        '[[route]]\nmethods = ["HEAD"]\npath = "/api/x"\nclass = "public"\naction = "x:y"\n',
        "bad method",
    ),
    "webhook without signer": (
        '[[route]]\nmethods = ["POST"]\npath = "/api/sms/other/{a}"\nclass = "webhook:twilio"\n'
        'action = "sms:other"\n',
        "signer",
    ),
    "authenticated route without resource or workspace": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/x"\nclass = "authenticated"\n'
        'action = "assistant:list"\n',
        "needs a resource or a workspace",
    ),
    "unknown workspace source": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/x"\nclass = "authenticated"\n'
        'action = "assistant:list"\nworkspace = ["cookie:ws"]\n',
        "unknown workspace source",
    ),
    "a looked-up resource with a workspace of the caller's choosing": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/x/{assistantId}"\nclass = "authenticated"\n'
        'action = "assistant:read"\nresource = { kind = "assistant", param = "assistantId" }\n'
        'workspace = ["header:X-Workspace-Id"]\n',
        "takes its workspace from the resource",
    ),
    "action without a policy rule": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/x"\nclass = "authenticated"\n'
        'action = "x:y"\nworkspace = ["principal"]\n',
        "has no rule",
    ),
    "bad path segment": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/a b"\nclass = "public"\naction = "x:y"\n',
        "bad path segment",
    ),
    "dot segment (unreachable)": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/../secret"\nclass = "public"\naction = "x:y"\n',
        "no request can ever match it",
    ),
    "trailing dot segment (unreachable)": (
        '[[route]]\nmethods = ["GET"]\npath = "/api/widget/{assistantId}/config/."\n'
        'class = "public"\naction = "x:y"\n',
        "no request can ever match it",
    ),
}


def _with_routes(tmp_path: Path, extra: str) -> Path:
    directory = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, directory)
    routes = directory / "routes.toml"
    routes.write_text(routes.read_text("utf-8") + "\n" + extra, encoding="utf-8")
    return directory


@pytest.mark.parametrize("case", sorted(BAD_ROUTES))
def test_a_bad_route_is_a_configuration_error_naming_it(case: str, tmp_path: Path) -> None:
    extra, fragment = BAD_ROUTES[case]
    directory = _with_routes(tmp_path, extra)
    with pytest.raises(ConfigurationError) as info:
        _authz(policies={"dir": str(directory)})
    message = str(info.value)
    assert f"{directory / 'routes.toml'} route #{NEW}" in message
    assert fragment in message


def test_the_appended_routes_are_valid_toml_and_the_shipped_table_loads(tmp_path: Path) -> None:
    """Guards the test above: the base table is fine, so each error is the appended route's."""
    directory = _with_routes(tmp_path, "")
    _authz(policies={"dir": str(directory)})
    for extra, _ in BAD_ROUTES.values():
        tomllib.loads(extra)


def test_a_route_table_that_is_not_toml_names_the_file(tmp_path: Path) -> None:
    directory = _with_routes(tmp_path, "[[route]\n")
    with pytest.raises(ConfigurationError, match="TOML syntax error") as info:
        _authz(policies={"dir": str(directory)})
    assert str(directory / "routes.toml") in str(info.value)


BAD_KINDS = {
    # a [resources] entry: a fragment the error message must contain
    'team = { read_action = "x" }': "resources.team: needs read_action",
    'team = { read_action = "team:read", visibility = "private" }': "resources.team: visibility",
    'team = { read_action = "team:read", visibility = ["a", "a"] }': "resources.team: visibility",
    'team = { read_action = "team:read", grants = true }': "resources.team: grants widen",
    'team = { read_action = "team:read", owner = "x" }': "resources.team: unknown key",
    'Team = { read_action = "team:read" }': "resources.Team: a kind is a lower-case name",
    'member = { read_action = "member:list", visibility = ["x"] }': "resources.member: a member",
}


@pytest.mark.parametrize("entry", sorted(BAD_KINDS))
def test_a_bad_resources_entry_names_it(entry: str, tmp_path: Path) -> None:
    directory = _with_routes(tmp_path, "")
    routes = directory / "routes.toml"
    text = routes.read_text("utf-8")
    kind = entry.split(" ", 1)[0]
    if kind == "member":  # replace the shipped entry rather than repeat the key
        text = text.replace('member = { read_action = "member:list" }\n', "")
    routes.write_text(text.replace("[resources]\n", f"[resources]\n{entry}\n"), encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        _authz(policies={"dir": str(directory)})
    assert BAD_KINDS[entry] in str(info.value)
    assert str(routes) in str(info.value)


def test_a_new_resource_kind_is_data_and_a_route_naming_an_undeclared_one_is_refused(
    tmp_path: Path,
) -> None:
    route = (
        '[[route]]\nmethods = ["GET"]\npath = "/api/teams/{teamId}"\nclass = "authenticated"\n'
        'action = "assistant:read"\nresource = { kind = "team", param = "teamId" }\n'
    )
    directory = _with_routes(tmp_path, route)
    with pytest.raises(ConfigurationError) as info:
        _authz(policies={"dir": str(directory)})
    message = str(info.value)
    assert f"{directory / 'routes.toml'} route #{NEW}" in message
    assert "resource kind 'team' is not declared in [resources]" in message
    # Declared, the same route loads: a kind is a [resources] line, not an enum member.
    routes = directory / "routes.toml"
    text = routes.read_text("utf-8").replace(
        "[resources]\n", '[resources]\nteam = { read_action = "assistant:read" }\n'
    )
    routes.write_text(text, encoding="utf-8")
    authz = _authz(policies={"dir": str(directory)})
    spec = authz.core.routes.kinds["team"]
    assert (spec.name, spec.read_action, spec.visibilities, spec.grants) == (
        "team",
        "assistant:read",
        (),
        False,
    )
    assert authz.core.routes.kinds["assistant"].visibilities == ("public", "workspace", "private")
    assert authz.core.routes.kinds["assistant"].grants


def test_a_p2_kind_or_visibility_the_routes_do_not_declare_fails_at_start_up(
    tmp_path: Path,
) -> None:
    # Formerly a closed Visibility enum refused "secret"; now routes.toml declares them.
    for line, fragment in (
        ("p2, guest, *, assistant, secret, *", "visibility 'secret' of 'assistant'"),
        ("p2, guest, *, document, team, *", "resource kind 'document'"),
    ):
        directory = _with_routes(tmp_path / fragment[:8].strip(), "")
        csv = directory / "policy.csv"
        csv.write_text(csv.read_text("utf-8") + line + "\n", encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            _authz(policies={"dir": str(directory)})
        assert fragment in str(info.value)
        assert str(csv) in str(info.value)


def test_workspace_sources_are_typed_at_load() -> None:
    from illumichat_authz.routes import FROM_PRINCIPAL, FROM_RESOURCE, WorkspaceFrom

    routes = {r.id: r for r in _authz().core.routes.routes}
    listing = routes["GET /api/assistants"].workspace
    assert [(s.kind, s.name) for s in listing] == [
        (WorkspaceFrom.HEADER, "x-workspace-id"),
        (WorkspaceFrom.PRINCIPAL, ""),
    ]
    assert listing[1] is FROM_PRINCIPAL
    assert routes["GET /api/assistants/{assistantId}"].workspace == (FROM_RESOURCE,)
    member = routes["DELETE /api/workspaces/{workspaceId}/members/{userId}"].workspace
    assert [(s.kind, s.name) for s in member] == [(WorkspaceFrom.PARAM, "workspaceId")]
    assert [str(s) for s in (*listing, *member)] == [
        "header:x-workspace-id",
        "principal",
        "param:workspaceId",
    ]
