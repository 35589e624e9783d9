"""``illumichat-authz policy check | explain | test | diff``: for policy authors, no Python
needed (``publish | rollback | status | shadow``: ``policy_rollout``)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..authorizer import Authorizer, build_core
from ..errors import ConfigurationError
from ..policy_check import Finding, check_policy
from ..policy_tables import load_table, run_table
from ..vocab import NO_ROLE, MembershipStatus, Relation, ResourceKind
from ._common import add_config_flag, add_request_flags, request_from_flags, settings_from

__all__ = ["register"]


def register(sub: Any) -> None:
    parser = sub.add_parser("policy", help="check, explain and test the policy files")
    psub = parser.add_subparsers(dest="policy_command", required=True, metavar="ACTION")

    check = psub.add_parser(
        "check",
        help="validate the policy files and the route table",
        description=(
            "Load the model, the rules and the route table (a load error exits 2), then lint "
            "them; exit 1 on an error, or on a warning with --strict."
        ),
    )
    add_config_flag(check)
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check.add_argument(
        "--app",
        metavar="MODULE[:ATTR]",
        help="also compare an app's routes with the table: a FastAPI, Starlette or Flask "
        "app, a Django wsgi/asgi application or URLconf module (DJANGO_SETTINGS_MODULE)",
    )
    check.set_defaults(handler=_check)

    explain = psub.add_parser(
        "explain",
        help="why a decision came out: for a request (--path ...) or attributes (--role ...)",
        description=(
            "Explain a decision: for attributes (--role and --action, asked of the policy "
            "alone) or for a full request (the decide flags, with the configured facts)."
        ),
    )
    add_config_flag(explain)
    attributes = explain.add_argument_group(
        "attribute mode", "the role and action values are those of the loaded policy"
    )
    attributes.add_argument("--role", help="the caller's role, or 'none' (e.g. member)")
    attributes.add_argument("--action", help="e.g. chat:create")
    attributes.add_argument(
        "--status",
        default=MembershipStatus.ACTIVE.value,
        choices=[s.value for s in MembershipStatus],
        help="the membership's status (default active)",
    )
    attributes.add_argument(
        "--kind",
        help="the kind of resource, for an action on a kind with visibility "
        "(default assistant when --visibility is given)",
    )
    attributes.add_argument(
        "--visibility",
        help="the resource's visibility, one of its kind's values in routes.toml [resources] "
        "(e.g. public, workspace, private for an assistant)",
    )
    attributes.add_argument(
        "--relation",
        default=Relation.NONE.value,
        choices=[r.value for r in Relation],
        help="what the caller is to the resource (default '-': nothing)",
    )
    add_request_flags(explain.add_argument_group("request mode"))
    explain.set_defaults(handler=_explain, usage_error=explain.error)

    test = psub.add_parser(
        "test",
        help="run a YAML table of expected decisions",
        description="Run a YAML table of expected decisions; exit 1 if any comes out otherwise.",
    )
    add_config_flag(test)
    test.add_argument("table", metavar="FILE", help="the YAML table (see docs/policy.md)")
    test.set_defaults(handler=_test)

    diff = psub.add_parser(
        "diff",
        help="list exactly the decisions and routes that change between two policy dirs",
        description="Compare two policy directories (model.conf, policy.csv, routes.toml) "
        "point by point over the whole attribute space (role x status x action x relation "
        "x kind and visibility) and route by route; print each change, one per line. Exit "
        "0 when nothing changes, 1 when something does, 2 when a directory does not load.",
    )
    diff.add_argument("old", metavar="OLD_DIR", help="the policy directory in force")
    diff.add_argument("new", metavar="NEW_DIR", help="the candidate")
    diff.add_argument("--json", action="store_true", help="one JSON object per change")
    diff.set_defaults(handler=_diff)

    from .policy_rollout import register_rollout

    register_rollout(psub)


def _check(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    core = build_core(settings)  # raises ConfigurationError on load errors (exit 2)
    findings = check_policy(core.policy, core.routes)
    if args.app:
        from ..integrations.route_check import check_app

        strict_app = core.check_app == "error"
        for finding in check_app(_import_app(args.app), core):
            findings.append(Finding("error", finding.message) if strict_app else finding)
    for finding in findings:
        print(finding)
    errors = [f for f in findings if f.severity == "error" or args.strict]
    pol = settings.policies
    files = ", ".join(
        str(f) for f in (pol.dir / pol.policy, pol.dir / pol.routes, *pol.host_routes)
    )
    print(
        f"{'FAILED' if errors else 'ok'}: {files}{f', app {args.app}' if args.app else ''}: "
        f"{len(core.routes.routes)} routes, {len(core.policy.actions)} actions, "
        f"{len(core.policy.roles)} roles; {len(findings)} finding(s)"
    )
    return 1 if errors else 0


def _import_app(spec: str) -> Any:
    """``module:attr`` (or a module) imported from the working directory, as uvicorn and
    ``flask --app`` do; Django is set up first when ``DJANGO_SETTINGS_MODULE`` is set."""
    module_name, _, attr = spec.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if os.environ.get("DJANGO_SETTINGS_MODULE"):
            import django  # type: ignore[import-untyped]

            django.setup()
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"--app {spec}: cannot import {module_name}: {exc}") from None
    if not attr:
        return module
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(f"--app {spec}: {module_name} has no attribute {attr!r}")
        target = getattr(target, part)
    return target


def _explain(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.role or args.action:
        if not (args.role and args.action):
            print("illumichat-authz: attribute mode needs --role and --action", file=sys.stderr)
            return 2
        core = build_core(settings)
        policy = core.policy
        _check_known(args, "--role", args.role, (*policy.roles, NO_ROLE))
        _check_known(args, "--action", args.action, sorted(policy.actions))
        kinds = core.routes.kinds
        visible = sorted(k for k, spec in kinds.items() if spec.has_visibility)
        # The kinds with visibility this action's routes act on.
        acted_on = sorted(
            {
                r.resource.kind
                for r in core.routes.routes
                if r.action == args.action and r.resource and r.resource.kind in visible
            }
        )
        kind = args.kind
        if kind is not None:
            _check_known(args, "--kind", kind, sorted(kinds))
        elif len(acted_on) > 1:
            print(
                f"illumichat-authz: {args.action} acts on {' and '.join(acted_on)}: give --kind",
                file=sys.stderr,
            )
            return 2
        elif acted_on:
            kind = acted_on[0]
        elif args.visibility:
            kind = ResourceKind.ASSISTANT.value  # --visibility alone: an assistant's
        spec = kinds.get(kind) if kind is not None else None
        if spec is not None and spec.has_visibility:
            if not args.visibility:
                # Without it only the role table would be consulted: an ALLOW that a real
                # request on a private resource would not get.
                print(
                    f"illumichat-authz: {args.action} acts on a {kind}: give --visibility "
                    f"{'|'.join(spec.visibilities)}",
                    file=sys.stderr,
                )
                return 2
            if args.visibility not in spec.visibilities:
                choices = ", ".join(repr(v) for v in spec.visibilities)
                args.usage_error(
                    f"argument --visibility: invalid choice: {args.visibility!r} "
                    f"(choose from {choices})"
                )
        if args.visibility and (spec is None or not spec.has_visibility):
            args.usage_error(f"argument --visibility: a {kind} has no visibility")
        has_vis = spec is not None and spec.has_visibility
        vkind, vis = (kind, args.visibility) if has_vis else (None, None)
        verdict = policy.verdict(args.role, args.status, args.action, args.relation, vkind, vis)
        print(f"{'ALLOW' if verdict.allowed else 'DENY'} ({verdict.reason.value})")
        for line in verdict.explanation:
            print(f"  {line}")
        return 0 if verdict.allowed else 1
    authorizer = Authorizer.from_settings(settings)
    request = request_from_flags(args)
    body = request.body or b""
    decision = authorizer.decide(request, read_body=lambda n: body if len(body) <= n else None)
    print(f"{decision.status} {decision.reason.value}: {decision.message}")
    print(f"  route:    {decision.route or '(undeclared)'} [{decision.route_class or '-'}]")
    print(f"  action:   {decision.action or '-'}")
    who = json.dumps(decision.principal.as_dict()) if decision.principal else "anonymous"
    print(f"  caller:   {who}; role: {decision.role or '-'}")
    if decision.resource:
        print(f"  resource: {json.dumps(decision.resource.as_dict())}")
    for line in decision.explanation:
        print(f"  rule:     {line}")
    return 0 if decision.allowed else 1


def _check_known(args: argparse.Namespace, flag: str, value: str, known: Sequence[str]) -> None:
    """A value the loaded policy does not know is a usage error (exit 2), not a deny."""
    if value not in known:
        args.usage_error(
            f"argument {flag}: invalid choice: {value!r} (choose from {', '.join(known)})"
        )


def _test(args: argparse.Namespace) -> int:
    core = build_core(settings_from(args))
    result = run_table(core, load_table(args.table), source=args.table)
    for failure in result.failures:
        print(f"FAIL {failure}")
    print(
        f"{'ok' if result.ok else 'FAILED'}: {result.checked} decisions checked, "
        f"{len(result.failures)} failed ({args.table})"
    )
    return 0 if result.ok else 1


def _load_dir(path: str) -> Any:
    from pathlib import Path

    from ..config import load_settings

    if not Path(path).is_dir():
        raise ConfigurationError(f"{path}: not a directory")
    return build_core(load_settings(overrides={"policies": {"dir": path}}, environment=False))


def _diff(args: argparse.Namespace) -> int:
    from ..policy_diff import decision_changes, route_changes

    old, new = _load_dir(args.old), _load_dir(args.new)
    decisions = decision_changes(old.policy, new.policy)
    routes = route_changes(old.routes, new.routes)
    for change in decisions:
        if args.json:
            print(
                json.dumps(
                    {
                        "decision": {
                            "role": change.role,
                            "status": change.status,
                            "action": change.action,
                            "relation": change.relation,
                            "kind": change.kind,
                            "visibility": change.visibility,
                        },
                        "old": {"allowed": change.old.allowed, "reason": change.old.reason.value},
                        "new": {"allowed": change.new.allowed, "reason": change.new.reason.value},
                    }
                )
            )
        else:
            print(change.line())
    for route in routes:
        if args.json:
            print(json.dumps({"route": route.route, "change": route.change,
                              "old": route.old, "new": route.new}))  # fmt: skip
        else:
            print(route.line())
    if not args.json:
        print(f"{len(decisions)} decisions and {len(routes)} routes change", file=sys.stderr)
    return 1 if decisions or routes else 0
