"""Policy test tables (``illumichat-authz policy test FILE``), as Cerbos and ``opa test`` do.

A YAML file names principals (any role the policy names and a status in one workspace,
or none), resources (of any kind routes.toml declares: assistants, chats, documents,
the workspace, memberships) and lists the allowed (principal, resource, actions)
triples. Every other combination of principal, resource and applicable action must be
denied. Applicable actions come from the route table: an action applies to the resource
kind its routes act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .authorizer import Authorizer
from .core import Core
from .errors import ConfigurationError
from .facts import InMemoryFacts
from .facts_file import facts_from_document
from .principal import CredentialKind, Principal
from .routes import KindSpec, RouteClass
from .vocab import ResourceKind

__all__ = ["TableResult", "load_table", "run_table"]

_WS = "ws-test"
_WORKSPACE = ResourceKind.WORKSPACE.value
_MEMBER = ResourceKind.MEMBER.value
_ASSISTANT = ResourceKind.ASSISTANT.value
_CHAT = ResourceKind.CHAT.value


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


def _applicable(core: Core) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {k: set() for k in core.routes.kinds}
    out.setdefault(_WORKSPACE, set())
    for route in core.routes.routes:
        if route.route_class is not RouteClass.AUTHENTICATED:
            continue
        kind = route.resource.kind if route.resource else _WORKSPACE
        out.setdefault(kind, set()).add(route.action)
    return out


# What each entry may say: a misspelt key ("visibilty") must fail, not fall back to a
# default that makes a wrong expectation pass.
_PRINCIPAL_KEYS = frozenset({"role", "status"})


def _resource_keys(kind: str, spec: KindSpec | None) -> frozenset[str]:
    if kind == _WORKSPACE:
        return frozenset({"kind"})
    if kind == _MEMBER:
        return frozenset({"kind", "role"})
    keys = {"kind", "creator"}
    if spec is not None and spec.has_visibility:
        keys.add("visibility")
    if spec is not None and spec.grants:
        keys.add("granted")
    return frozenset(keys)


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


def _role(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where}: a role is a non-empty string, got {value!r}")
    return value


def _build(
    data: dict[str, Any], source: str, core: Core
) -> tuple[InMemoryFacts, dict[str, Principal], dict[str, tuple[str, str]]]:
    """The table's world as a facts document (the facts JSON format), and who is who."""
    memberships: list[dict[str, Any]] = [
        # The workspace exists even when no principal is a member of it (the facts format
        # refuses resources in a workspace nobody belongs to); no principal is this user.
        {"user": "anchor", "workspace": _WS, "role": "anchor", "status": "inactive"}
    ]
    doc: dict[str, list[dict[str, Any]]] = {
        "memberships": memberships,
        "assistants": [],
        "chats": [],
        "resources": [],
        "grants": [],
    }
    principals: dict[str, Principal] = {}
    for name, raw in _mapping(data["principals"], f"{source}: principals").items():
        where = f"{source}: principals.{name}"
        spec = _mapping(raw, where)
        _only(spec, _PRINCIPAL_KEYS, where)
        user = f"user-{name}"
        principals[name] = Principal(user_id=user, kind=CredentialKind.SESSION, workspace=_WS)
        if "role" in spec:
            role = _role(spec["role"], f"{where}.role")
            if role not in core.policy.roles:
                raise ConfigurationError(
                    f"{where}.role: {role!r} is no role of the policy "
                    f"({', '.join(core.policy.roles)})"
                )
            status = str(spec.get("status", "active"))
            memberships.append({"user": user, "workspace": _WS, "role": role, "status": status})
    resources: dict[str, tuple[str, str]] = {}
    kinds = core.routes.kinds
    for name, raw in _mapping(data["resources"], f"{source}: resources").items():
        where = f"{source}: resources.{name}"
        spec = _mapping(raw, where)
        kind = spec.get("kind")
        if not isinstance(kind, str) or (kind not in kinds and kind != _WORKSPACE):
            raise ConfigurationError(f"{where}.kind must be one of {sorted({*kinds, _WORKSPACE})}")
        kind_spec = kinds.get(kind)
        _only(spec, _resource_keys(kind, kind_spec), where)
        creator = "user-nobody"
        if spec.get("creator") is not None:
            creator = "user-" + _principal_name(spec["creator"], principals, f"{where}.creator")
        rid = f"res-{name}"
        if kind == _WORKSPACE:
            rid = _WS
        elif kind == _MEMBER:
            rid = f"user-target-{name}"
            role = _role(spec.get("role", "member"), f"{where}.role")
            memberships.append({"user": rid, "workspace": _WS, "role": role})
        elif kind == _CHAT:
            doc["assistants"].append(
                {
                    "id": f"{rid}-assistant",
                    "workspace": _WS,
                    "visibility": "workspace",
                    "creator": creator,
                }
            )
            doc["chats"].append(
                {"id": rid, "workspace": _WS, "assistant": f"{rid}-assistant", "creator": creator}
            )
        else:
            record: dict[str, Any] = {"id": rid, "workspace": _WS, "creator": creator}
            if kind_spec is not None and kind_spec.has_visibility:
                vis = spec.get("visibility")
                if vis not in kind_spec.visibilities:
                    raise ConfigurationError(
                        f"{where}.visibility must be one of {list(kind_spec.visibilities)}"
                    )
                record["visibility"] = vis
            if kind == _ASSISTANT:
                doc["assistants"].append(record)
            else:
                doc["resources"].append({"kind": kind, **record})
            granted = spec.get("granted") or []
            if not isinstance(granted, list):
                raise ConfigurationError(f"{where}.granted must be a list of principals")
            for grantee in granted:
                grantee = _principal_name(grantee, principals, f"{where}.granted")
                target = {"assistant": rid} if kind == _ASSISTANT else {"kind": kind, "id": rid}
                doc["grants"].append({"user": f"user-{grantee}", **target})
        resources[name] = (kind, rid)
    return facts_from_document(doc, source=source), principals, resources


def run_table(core: Core, data: dict[str, Any], *, source: str = "table") -> TableResult:
    facts, principals, resources = _build(data, source, core)
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
                    f"{source}: allow[{i}]: {action} does not apply to a {kind} "
                    f"resource ({r}); applicable: {sorted(applicable[kind])}"
                )
            expected.add((p, r, action))
    result = TableResult()
    authorizer = Authorizer(core=core, facts=facts)
    for pname, principal in principals.items():
        for rname, (kind, rid) in resources.items():
            for action in sorted(applicable[kind]):
                decision = authorizer.decide_access(
                    principal=principal,
                    action=action,
                    resource_kind=kind,
                    resource_id=rid,
                    workspace=_WS,
                )
                result.checked += 1
                want = (pname, rname, action) in expected
                if decision.allowed != want:
                    verdict = "allowed" if decision.allowed else f"denied ({decision.reason.value})"
                    result.failures.append(
                        f"{pname} {action} on {rname}: expected {'allow' if want else 'deny'}, "
                        f"got {verdict}; {' / '.join(decision.explanation)}"
                    )
    return result
