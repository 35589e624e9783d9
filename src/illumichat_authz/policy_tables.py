"""Policy test tables (``illumichat-authz policy test FILE``), as Cerbos and ``opa test`` do.

A YAML file names principals (a role and status in one workspace, or none), resources
(assistants, chats, the workspace, memberships) and lists the allowed
(principal, resource, actions) triples. Every other combination of principal, resource
and applicable action must be denied. Applicable actions come from the route table: an
action applies to the resource kind its routes act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .core import Core, Query, decide_access, flow, run_flow
from .errors import ConfigurationError
from .facts import Assistant, Chat, Grant, InMemoryFacts, Membership
from .principal import CredentialKind, Principal
from .routes import RouteClass
from .vocab import ResourceKind, Role, Visibility

__all__ = ["TableResult", "load_table", "run_table"]

_WS = "ws-test"


@dataclass
class TableResult:
    checked: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def load_table(path: str | Path) -> dict[str, Any]:
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"policy test file not found: {file}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigurationError(f"{file}{where}: YAML error: {exc}") from None
    if not isinstance(data, dict) or not {"principals", "resources", "allow"} <= set(data):
        raise ConfigurationError(f"{file}: needs 'principals', 'resources' and 'allow'")
    return data


def _applicable(core: Core) -> dict[ResourceKind, set[str]]:
    out: dict[ResourceKind, set[str]] = {k: set() for k in ResourceKind}
    for route in core.routes.routes:
        if route.route_class is not RouteClass.AUTHENTICATED:
            continue
        kind = route.resource.kind if route.resource else ResourceKind.WORKSPACE
        out[kind].add(route.action)
    return out


# What each entry may say: a misspelt key ("visibilty") must fail, not fall back to a
# default that makes a wrong expectation pass.
_PRINCIPAL_KEYS = frozenset({"role", "status"})
_RESOURCE_KEYS = {
    ResourceKind.ASSISTANT: frozenset({"kind", "visibility", "creator", "granted"}),
    ResourceKind.CHAT: frozenset({"kind", "creator"}),
    ResourceKind.MEMBER: frozenset({"kind", "role"}),
    ResourceKind.WORKSPACE: frozenset({"kind"}),
}


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where} must be a mapping")
    return value


def _only(spec: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _principal_name(value: Any, names: dict[str, Principal], where: str) -> str:
    if not isinstance(value, str) or value not in names:
        raise ConfigurationError(f"{where}: {value!r} is not one of the principals")
    return value


def _build(
    data: dict[str, Any], source: str
) -> tuple[InMemoryFacts, dict[str, Principal], dict[str, tuple[ResourceKind, str]]]:
    facts = InMemoryFacts()
    principals: dict[str, Principal] = {}
    for name, raw in _mapping(data["principals"], f"{source}: principals").items():
        spec = _mapping(raw, f"{source}: principals.{name}")
        _only(spec, _PRINCIPAL_KEYS, f"{source}: principals.{name}")
        user = f"user-{name}"
        principals[name] = Principal(user_id=user, kind=CredentialKind.SESSION, workspace=_WS)
        if "role" in spec:
            try:
                role = Role(spec["role"])
            except ValueError:
                raise ConfigurationError(
                    f"{source}: principals.{name}.role: unknown role {spec['role']!r}"
                ) from None
            facts.add(
                Membership(
                    user=user, workspace=_WS, role=role, status=str(spec.get("status", "active"))
                )
            )
    resources: dict[str, tuple[ResourceKind, str]] = {}
    for name, raw in _mapping(data["resources"], f"{source}: resources").items():
        where = f"{source}: resources.{name}"
        spec = _mapping(raw, where)
        try:
            kind = ResourceKind(spec["kind"])
        except (KeyError, TypeError, ValueError):
            raise ConfigurationError(
                f"{where}.kind must be one of {[k.value for k in ResourceKind]}"
            ) from None
        _only(spec, _RESOURCE_KEYS[kind], where)
        creator = "user-nobody"
        if spec.get("creator") is not None:
            creator = "user-" + _principal_name(spec["creator"], principals, f"{where}.creator")
        rid = f"res-{name}"
        if kind is ResourceKind.ASSISTANT:
            try:
                vis = Visibility(spec.get("visibility", "workspace"))
            except ValueError:
                raise ConfigurationError(
                    f"{source}: resources.{name}.visibility is unknown"
                ) from None
            facts.add(Assistant(id=rid, workspace=_WS, visibility=vis, creator=creator))
            granted = spec.get("granted") or []
            if not isinstance(granted, list):
                raise ConfigurationError(f"{where}.granted must be a list of principals")
            for grantee in granted:
                grantee = _principal_name(grantee, principals, f"{where}.granted")
                facts.add(Grant(user=f"user-{grantee}", assistant=rid))
        elif kind is ResourceKind.CHAT:
            facts.add(
                Assistant(
                    id=f"{rid}-assistant",
                    workspace=_WS,
                    visibility=Visibility.WORKSPACE,
                    creator=creator,
                )
            )
            facts.add(Chat(id=rid, workspace=_WS, assistant=f"{rid}-assistant", creator=creator))
        elif kind is ResourceKind.MEMBER:
            rid = f"user-target-{name}"
            try:
                target_role = Role(spec.get("role", "member"))
            except ValueError:
                raise ConfigurationError(f"{where}.role: unknown role {spec['role']!r}") from None
            facts.add(Membership(user=rid, workspace=_WS, role=target_role))
        else:
            rid = _WS
        resources[name] = (kind, rid)
    return facts, principals, resources


def _answer(facts: InMemoryFacts, query: Query) -> Any:
    if query.lookup in ("membership", "resource", "has_grant"):
        return getattr(facts, query.lookup)(*query.args)
    raise TypeError(f"policy tables need no {query.lookup} lookup")


def run_table(core: Core, data: dict[str, Any], *, source: str = "table") -> TableResult:
    facts, principals, resources = _build(data, source)
    applicable = _applicable(core)
    expected: set[tuple[str, str, str]] = set()
    for i, entry in enumerate(data["allow"] or []):
        try:
            p, r, actions = entry["principal"], entry["resource"], entry["actions"]
        except (KeyError, TypeError):
            raise ConfigurationError(
                f"{source}: allow[{i}] needs principal, resource, actions"
            ) from None
        if p not in principals or r not in resources:
            raise ConfigurationError(f"{source}: allow[{i}]: unknown principal or resource")
        if not isinstance(actions, list):
            raise ConfigurationError(f"{source}: allow[{i}].actions must be a list")
        for action in actions:
            if action not in core.policy.actions:
                raise ConfigurationError(f"{source}: allow[{i}]: unknown action {action!r}")
            kind = resources[r][0]
            if action not in applicable[kind]:
                # It would never be checked, so the line could never fail: refuse it.
                raise ConfigurationError(
                    f"{source}: allow[{i}]: {action} does not apply to a {kind.value} "
                    f"resource ({r}); applicable: {sorted(applicable[kind])}"
                )
            expected.add((p, r, action))
    result = TableResult()
    for pname, principal in principals.items():
        for rname, (kind, rid) in resources.items():
            for action in sorted(applicable[kind]):
                steps = flow(
                    decide_access,
                    core,
                    principal=principal,
                    action=action,
                    resource_kind=kind.value,
                    resource_id=rid,
                    workspace=_WS,
                )
                decision = run_flow(steps, lambda q: _answer(facts, q))
                result.checked += 1
                want = (pname, rname, action) in expected
                if decision.allowed != want:
                    verdict = "allowed" if decision.allowed else f"denied ({decision.reason.value})"
                    result.failures.append(
                        f"{pname} {action} on {rname}: expected {'allow' if want else 'deny'}, "
                        f"got {verdict}; {' / '.join(decision.explanation)}"
                    )
    return result
