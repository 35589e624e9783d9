"""What a policy change changes: every decision and every route, exhaustively.

The compiled decision table covers the whole attribute space (role x membership status x
action x relation x kind and visibility), so two policies can be compared point by point:
:func:`decision_changes` lists exactly the points whose verdict differs (allowed or not,
and the reason), over the union of both policies' roles, actions and visibilities, so a
role, action or visibility that only one side knows is compared too (the other side's
answer for it is its deny). :func:`route_changes` lists the routes added, removed or
changed (class, action, resource, workspace sources, rate limit, signer).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product

from .policy import Policy, Verdict
from .routes import Route, RouteTable
from .vocab import NO_ROLE, MembershipStatus, Relation

__all__ = ["DecisionChange", "RouteChange", "decision_changes", "route_changes", "union_space"]

_STATUSES = tuple(s.value for s in MembershipStatus)
_RELATIONS = tuple(r.value for r in Relation)


@dataclass(frozen=True, slots=True)
class DecisionChange:
    role: str
    status: str
    action: str
    relation: str
    kind: str | None
    visibility: str | None
    old: Verdict
    new: Verdict

    def line(self) -> str:
        on = f" {self.visibility} {self.kind}" if self.kind is not None else ""
        return (
            f"decision role={self.role} status={self.status} action={self.action} "
            f"relation={self.relation}{on}: {_said(self.old)} -> {_said(self.new)}"
        )


@dataclass(frozen=True, slots=True)
class RouteChange:
    route: str
    #: "+" added, "-" removed, "~" changed.
    change: str
    old: str | None
    new: str | None

    def line(self) -> str:
        if self.change == "+":
            return f"route + {self.route}: {self.new}"
        if self.change == "-":
            return f"route - {self.route}: {self.old}"
        return f"route ~ {self.route}: {self.old} -> {self.new}"


def _said(verdict: Verdict) -> str:
    return "allowed" if verdict.allowed else f"denied ({verdict.reason.value})"


def union_space(
    old: Policy, new: Policy
) -> Iterator[tuple[str, str, str, str, str | None, str | None]]:
    """Every point either policy's table covers."""
    roles = sorted({*old.roles, *new.roles, NO_ROLE})
    actions = sorted(old.actions | new.actions)
    kinds: set[tuple[str | None, str | None]] = {(None, None)}
    for policy in (old, new):
        kinds.update((k, v) for k, values in policy.visibilities.items() for v in values)
    ordered = sorted(kinds, key=lambda kv: (kv[0] or "", kv[1] or ""))
    for role, status, action, relation in product(roles, _STATUSES, actions, _RELATIONS):
        for kind, vis in ordered:
            yield role, status, action, relation, kind, vis


def decision_changes(old: Policy, new: Policy) -> list[DecisionChange]:
    """The points of the attribute space where ``old`` and ``new`` decide differently."""
    changes: list[DecisionChange] = []
    for point in union_space(old, new):
        before, after = old.verdict(*point), new.verdict(*point)
        if (before.allowed, before.reason) != (after.allowed, after.reason):
            changes.append(DecisionChange(*point, old=before, new=after))
    return changes


def _describe(route: Route) -> str:
    parts = [str(route.route_class), route.action]
    if route.resource is not None:
        parts.append(f"resource={route.resource.kind}:{route.resource.param}")
    if route.workspace:
        parts.append("workspace=" + ",".join(str(w) for w in route.workspace))
    if route.rate_limit:
        parts.append(f"rate_limit={route.rate_limit}")
        if route.rate_limit_unavailable != "refuse":
            parts.append(f"rate_limit_unavailable={route.rate_limit_unavailable}")
    if route.signer:
        parts.append(f"signer={route.signer}")
    return " ".join(parts)


def route_changes(old: RouteTable, new: RouteTable) -> list[RouteChange]:
    """Routes added, removed or changed between two tables, by route id."""
    before = {r.id: _describe(r) for r in old.routes}
    after = {r.id: _describe(r) for r in new.routes}
    changes: list[RouteChange] = []
    for route in sorted(before.keys() | after.keys()):
        was, now = before.get(route), after.get(route)
        if was == now:
            continue
        kind = "+" if was is None else "-" if now is None else "~"
        changes.append(RouteChange(route, kind, was, now))
    return changes
