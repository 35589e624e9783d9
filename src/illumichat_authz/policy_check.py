"""Static checks of a policy and route table (``illumichat-authz policy check``).

Loading already refuses what cannot work (syntax errors, values outside the vocabulary,
shadowed routes). These checks find what loads but is almost certainly a mistake.
"""

from __future__ import annotations

from dataclasses import dataclass

from .policy import Policy
from .routes import RouteClass, RouteTable
from .vocab import ResourceKind

__all__ = ["Finding", "check_policy"]


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str  # "error" | "warning"
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


def check_policy(policy: Policy, routes: RouteTable) -> list[Finding]:
    findings: list[Finding] = []
    p_rules, p2_rules, g_rules = policy.p_rules, policy.p2_rules, policy.g_rules
    hierarchy = {r[0] for r in g_rules} | {r[1] for r in g_rules}

    route_actions = {r.action for r in routes.routes if r.route_class is RouteClass.AUTHENTICATED}
    for route in routes.routes:
        if route.route_class is RouteClass.AUTHENTICATED and route.action not in policy.actions:
            findings.append(
                Finding("error", f"{route.origin}: action {route.action!r} has no policy rule")
            )
    for kind, action in routes.read_actions.items():
        if action not in policy.actions:
            findings.append(
                Finding("error", f"resources.{kind.value}: unknown read_action {action!r}")
            )
    for action in sorted(policy.actions - route_actions - set(routes.read_actions.values())):
        findings.append(Finding("warning", f"policy action {action!r} is used by no route"))

    for role in policy.roles:
        own = [r for r in (*p_rules, *p2_rules) if r[0] == role]
        inherits = any(r[0] == role for r in g_rules)
        if not own and not inherits:
            findings.append(Finding("error", f"role {role!r} has no rules and inherits none"))
        if hierarchy and role not in hierarchy:
            findings.append(Finding("warning", f"role {role!r} is outside the g hierarchy"))

    for route in routes.routes:
        if route.resource is not None and route.resource.kind is ResourceKind.ASSISTANT:
            continue
        if (
            route.route_class is RouteClass.AUTHENTICATED
            and route.action.startswith("assistant:")
            and route.resource is None
            and route.action not in {"assistant:list", "assistant:create"}
        ):
            findings.append(
                Finding(
                    "warning", f"{route.origin}: assistant action without an assistant resource"
                )
            )
    seen_rules: set[tuple[str, ...]] = set()
    for ptype, rules in (("p", p_rules), ("p2", p2_rules)):
        for rule in rules:
            key = (ptype, *rule)
            if key in seen_rules:
                findings.append(Finding("warning", f"duplicate rule: {', '.join(key)}"))
            seen_rules.add(key)
    return findings
