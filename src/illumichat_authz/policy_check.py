"""Static checks of a policy and route table (``illumichat-authz policy check``).

Loading already refuses what cannot work (syntax errors, values outside the vocabulary,
shadowed routes), and :func:`require_consistent` what the two files cannot mean together
(a route action with no rule, a p2 kind or visibility value routes.toml does not
declare). The other checks find what loads but is almost certainly a mistake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import ConfigurationError
from .policy import Policy
from .routes import RouteClass, RouteTable
from .vocab import ResourceKind

__all__ = ["Finding", "Severity", "check_policy", "consistency_errors", "require_consistent"]

Severity = Literal["error", "warning"]

#: Kinds whose actions never need a resource looked up (see routes.toml [resources]).
_SPECIAL_KINDS = frozenset({ResourceKind.WORKSPACE.value, ResourceKind.MEMBER.value})
#: Verbs that act on a kind's collection (in a workspace), not on one resource.
_COLLECTION_VERBS = frozenset({"list", "create"})


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


def consistency_errors(policy: Policy, routes: RouteTable) -> list[str]:
    """What the policy and the route table cannot mean together: start-up errors."""
    errors: list[str] = []
    for route in routes.routes:
        if route.route_class is RouteClass.AUTHENTICATED and route.action not in policy.actions:
            errors.append(
                f"{route.origin}: action {route.action!r} has no rule in {policy.policy_path}; "
                "every request to it would be denied"
            )
    for kind, values in policy.visibilities.items():
        spec = routes.kinds.get(kind)
        if spec is None or not spec.has_visibility:
            errors.append(
                f"{policy.policy_path}: p2 rules name resource kind {kind!r}, which "
                "routes.toml [resources] does not declare with visibility = [...]"
            )
            continue
        for vis in values:
            if vis not in spec.visibilities:
                errors.append(
                    f"{policy.policy_path}: p2 rules name visibility {vis!r} of {kind!r}, "
                    f"which is not one of resources.{kind}.visibility {list(spec.visibilities)}"
                )
    return errors


def require_consistent(policy: Policy, routes: RouteTable) -> None:
    """Raise :class:`ConfigurationError` on the first :func:`consistency_errors` entry."""
    errors = consistency_errors(policy, routes)
    if errors:
        raise ConfigurationError(errors[0])


def check_policy(policy: Policy, routes: RouteTable) -> list[Finding]:
    findings = [Finding("error", e) for e in consistency_errors(policy, routes)]

    def warn(message: str) -> None:
        findings.append(Finding("warning", message))

    p_rules, p2_rules, g_rules = policy.p_rules, policy.p2_rules, policy.g_rules
    hierarchy = {r[0] for r in g_rules} | {r[1] for r in g_rules}

    route_actions = {r.action for r in routes.routes if r.route_class is RouteClass.AUTHENTICATED}
    read_actions = {spec.read_action for spec in routes.kinds.values()}
    for name, spec in routes.kinds.items():
        if spec.read_action not in policy.actions:
            findings.append(
                Finding("error", f"resources.{name}: unknown read_action {spec.read_action!r}")
            )
        for vis in spec.visibilities:
            if vis not in policy.visibilities.get(name, ()):
                warn(f"resources.{name}: no p2 rule lets anyone see a {vis} {name}")
    for action in sorted(policy.actions - route_actions - read_actions):
        warn(f"policy action {action!r} is used by no route")

    for role in policy.roles:
        own = [r for r in (*p_rules, *p2_rules) if r[0] == role]
        inherits = any(r[0] == role for r in g_rules)
        if not own and not inherits:
            findings.append(Finding("error", f"role {role!r} has no rules and inherits none"))
        if hierarchy and role not in hierarchy:
            warn(f"role {role!r} is outside the g hierarchy")

    for route in routes.routes:
        kind, _, verb = route.action.partition(":")
        if (
            route.route_class is RouteClass.AUTHENTICATED
            and route.resource is None
            and kind in routes.kinds
            and kind not in _SPECIAL_KINDS
            and verb not in _COLLECTION_VERBS
        ):
            warn(f"{route.origin}: {kind} action without a {kind} resource")
    seen_rules: set[tuple[str, ...]] = set()
    for ptype, rules in (("p", p_rules), ("p2", p2_rules)):
        for rule in rules:
            key = (ptype, *rule)
            if key in seen_rules:
                warn(f"duplicate rule: {', '.join(key)}")
            seen_rules.add(key)
    return findings
