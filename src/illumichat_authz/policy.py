"""Role and visibility rules: the Casbin files in ``policies/``, compiled for speed.

Casbin is the source of truth. Because the model's request is a few closed-set
attributes (``vocab``), the whole attribute space is small (a few thousand points), so
at load time we ask casbin's own ``enforce_ex`` about every point once and keep the
answers, with the rule that decided, in a dict. Per request, a decision is then one
dict lookup instead of a scan of the policy lines; ``tests/test_policy_equivalence.py``
checks the table against casbin over the whole space. Editing the policy files changes
decisions with no code change.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import casbin

from .errors import ConfigurationError
from .reasons import Reason
from .vocab import NO_ROLE, MembershipStatus, Relation, Visibility

__all__ = ["Attributes", "Policy", "Verdict"]

_WILDCARD = "*"
_STATUSES = tuple(s.value for s in MembershipStatus)
_RELATIONS = tuple(r.value for r in Relation)
_VISIBILITIES = tuple(v.value for v in Visibility)


@dataclass(frozen=True, slots=True)
class Attributes:
    """One point of the attribute space; ``vis`` is ``None`` for non-assistant actions."""

    role: str
    status: str
    act: str
    rel: str
    vis: str | None


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: Reason
    #: The policy lines that allowed, or a sentence saying which table had no rule.
    explanation: tuple[str, ...]
    #: The human message for the decision (computed once, with the table).
    message: str = ""


def _line(ptype: str, rule: Iterable[str]) -> str:
    return ", ".join((ptype, *rule))


class Policy:
    """The compiled role and visibility rules of one model + policy file pair."""

    def __init__(
        self, *, model_path: Path, policy_path: Path, extra_actions: Iterable[str] = ()
    ) -> None:
        self.model_path = model_path
        self.policy_path = policy_path
        self.enforcer = _load_enforcer(model_path, policy_path)
        try:
            self._ctx2 = self.enforcer.new_enforce_context("2")
            model = self.enforcer.get_model()
            p_rules: list[list[str]] = [list(r) for r in model.get_policy("p", "p")]
            p2_rules: list[list[str]] = [list(r) for r in model.get_policy("p", "p2")]
            g_rules: list[list[str]] = [list(r) for r in model.get_policy("g", "g")]
        except Exception as exc:  # a model without p, p2 or g sections
            raise ConfigurationError(
                f"{model_path}: the model must define r/p/e/m, r2/p2/e2/m2 and g: {exc!r}"
            ) from None
        self.roles: tuple[str, ...] = _roles(g_rules, p_rules, p2_rules)
        _check_hierarchy(policy_path, g_rules)
        self.actions: frozenset[str] = frozenset(r[2] for r in p_rules) | frozenset(extra_actions)
        self.top_role = _top_role(self.roles, g_rules)
        self._relations_used = frozenset(r[3] for r in (*p_rules, *p2_rules))
        try:
            #: (role, status, act, rel, vis) -> Verdict over the whole attribute space.
            self.table: Mapping[tuple[str, str, str, str, str | None], Verdict] = self._compile()
        except Exception as exc:  # matcher syntax errors surface on the first enforce
            raise ConfigurationError(f"{model_path}: cannot evaluate the model: {exc!r}") from None
        # (action, visibility) pairs whose verdict can change when the caller holds a grant;
        # elsewhere the grant need not be looked up at all.
        none, grantee = Relation.NONE.value, Relation.GRANTEE.value
        self.grant_sensitive: frozenset[tuple[str, str | None]] = frozenset(
            (act, vis)
            for (role, status, act, rel, vis), verdict in self.table.items()
            if rel == grantee
            and (verdict.allowed, verdict.reason)
            != (
                self.table[(role, status, act, none, vis)].allowed,
                self.table[(role, status, act, none, vis)].reason,
            )
        )

    def grant_matters(self, act: str, vis: str | None) -> bool:
        """Whether holding a grant can change the verdict for ``act`` on a ``vis`` assistant."""
        return (act, vis) in self.grant_sensitive

    def mentions_relation(self, relation: str) -> bool:
        """Whether any rule names ``relation`` (if not, it need never be looked up)."""
        return relation in self._relations_used

    # --- casbin itself: the reference the compiled table must equal ---------------
    def casbin_role_rule(
        self, role: str, status: str, act: str, rel: str
    ) -> tuple[bool, list[str]]:
        ok, rule = self.enforcer.enforce_ex(role, status, act, rel)
        return bool(ok), list(rule)

    def casbin_visibility_rule(
        self, role: str, status: str, vis: str, rel: str
    ) -> tuple[bool, list[str]]:
        ok, rule = self.enforcer.enforce_ex(self._ctx2, role, status, vis, rel)
        return bool(ok), list(rule)

    def casbin_allows(self, a: Attributes) -> bool:
        """Casbin's own answer for ``a``: both tables where the action is on an assistant."""
        ok, _ = self.casbin_role_rule(a.role, a.status, a.act, a.rel)
        if ok and a.vis is not None:
            ok, _ = self.casbin_visibility_rule(a.role, a.status, a.vis, a.rel)
        return ok

    # --- the fast path -------------------------------------------------------------
    def evaluate(self, a: Attributes) -> Verdict:
        """The verdict for ``a``; unknown attribute values are a deny, never an error."""
        verdict = self.table.get((a.role, a.status, a.act, a.rel, a.vis))
        if verdict is None:
            return Verdict(
                False,
                Reason.POLICY_DENIED,
                (f"no policy rule covers role={a.role} status={a.status} action={a.act}",),
                f"the policy does not allow {a.act}",
            )
        return verdict

    def verdict(self, role: str, status: str, act: str, rel: str, vis: str | None) -> Verdict:
        """:meth:`evaluate` without building an :class:`Attributes` (the per-request path)."""
        found = self.table.get((role, status, act, rel, vis))
        return (
            found if found is not None else self.evaluate(Attributes(role, status, act, rel, vis))
        )

    def space(self) -> Iterable[Attributes]:
        """Every point of the attribute space the table covers."""
        for role, status, act, rel in product(
            (*self.roles, NO_ROLE), _STATUSES, sorted(self.actions), _RELATIONS
        ):
            for vis in (None, *_VISIBILITIES):
                yield Attributes(role, status, act, rel, vis)

    def _compile(self) -> dict[tuple[str, str, str, str, str | None], Verdict]:
        roles = (*self.roles, NO_ROLE)
        p: dict[tuple[str, str, str, str], tuple[bool, list[str]]] = {
            key: self.casbin_role_rule(*key)
            for key in product(roles, _STATUSES, sorted(self.actions), _RELATIONS)
        }
        p2: dict[tuple[str, str, str, str], tuple[bool, list[str]]] = {
            key: self.casbin_visibility_rule(*key)
            for key in product(roles, _STATUSES, _VISIBILITIES, _RELATIONS)
        }
        table: dict[tuple[str, str, str, str, str | None], Verdict] = {}
        for a in self.space():
            v = self._verdict(a, p, p2)
            table[(a.role, a.status, a.act, a.rel, a.vis)] = Verdict(
                v.allowed, v.reason, v.explanation, _message(v, a)
            )
        return table

    def _verdict(
        self,
        a: Attributes,
        p: dict[tuple[str, str, str, str], tuple[bool, list[str]]],
        p2: dict[tuple[str, str, str, str], tuple[bool, list[str]]],
    ) -> Verdict:
        active = MembershipStatus.ACTIVE.value
        ok, rule = p[(a.role, a.status, a.act, a.rel)]
        where = f"role={a.role} status={a.status} action={a.act} relation={a.rel}"
        if a.role == NO_ROLE:
            return Verdict(
                False, Reason.NOT_A_MEMBER, ("the caller has no membership in the workspace",)
            )
        if not ok:
            if p[(a.role, active, a.act, a.rel)][0]:
                reason = Reason.MEMBERSHIP_INACTIVE
            elif self.top_role and p[(self.top_role, a.status, a.act, a.rel)][0]:
                reason = Reason.INSUFFICIENT_ROLE
            else:
                reason = Reason.POLICY_DENIED
            return Verdict(False, reason, (f"no p rule in {self.policy_path.name} allows {where}",))
        explanation = (_line("p", rule),)
        if a.vis is None:
            return Verdict(True, Reason.ALLOWED, explanation)
        ok2, rule2 = p2[(a.role, a.status, a.vis, a.rel)]
        if ok2:
            return Verdict(True, Reason.ALLOWED, (*explanation, _line("p2", rule2)))
        reason = (
            Reason.MEMBERSHIP_INACTIVE
            if p2[(a.role, active, a.vis, a.rel)][0]
            else Reason.NOT_VISIBLE
        )
        return Verdict(
            False,
            reason,
            (
                *explanation,
                f"but no p2 rule in {self.policy_path.name} lets role={a.role} "
                f"status={a.status} relation={a.rel} see a {a.vis} assistant",
            ),
        )


def _message(verdict: Verdict, a: Attributes) -> str:
    reason = verdict.reason
    if verdict.allowed:
        return f"{a.role} may {a.act}"
    if reason is Reason.NOT_A_MEMBER:
        return "you are not a member of this workspace"
    if reason is Reason.MEMBERSHIP_INACTIVE:
        return f"your membership in this workspace is not active, so {a.act} is not allowed"
    if reason is Reason.INSUFFICIENT_ROLE:
        return f"your role ({a.role}) does not allow {a.act} here"
    if reason is Reason.NOT_VISIBLE:
        return f"this {a.vis} assistant is not visible to you"
    return f"the policy does not allow {a.act}"


def _load_enforcer(model_path: Path, policy_path: Path) -> Any:
    for path in (model_path, policy_path):
        if not path.is_file():
            raise ConfigurationError(f"policy file not found: {path}")
    _check_csv(policy_path)
    # pycasbin disables the process-wide "casbin" logger when it builds an enforcer;
    # leave the host's logging as we found it.
    casbin_logger = logging.getLogger("casbin")
    was_disabled = casbin_logger.disabled
    try:
        return casbin.Enforcer(str(model_path), str(policy_path))
    except Exception as exc:  # casbin raises bare exceptions for syntax errors
        raise ConfigurationError(f"{model_path}: cannot load casbin model/policy: {exc}") from None
    finally:
        casbin_logger.disabled = was_disabled


def _check_csv(policy_path: Path) -> None:
    """Catch what casbin would silently accept, with the line at fault.

    Unknown rule types, wrong column counts, and values outside the vocabulary (which the
    compiled table could not represent) are refused here.
    """
    widths = {"p": 5, "p2": 5, "g": 3}
    statuses = {*_STATUSES, _WILDCARD}
    relations = {*_RELATIONS, _WILDCARD}
    try:
        text = policy_path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{policy_path}: not valid UTF-8") from None
    for lineno, row in enumerate(csv.reader(io.StringIO(text), skipinitialspace=True), start=1):
        cells = [c.strip() for c in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        where = f"{policy_path}:{lineno}"
        ptype = cells[0]
        want = widths.get(ptype)
        if want is None:
            raise ConfigurationError(f"{where}: unknown rule type {ptype!r}")
        if len(cells) != want:
            raise ConfigurationError(
                f"{where}: {ptype} rules have {want - 1} fields, found {len(cells) - 1}"
            )
        if any(not c for c in cells):
            raise ConfigurationError(f"{where}: empty field")
        if NO_ROLE in (cells[1], cells[2] if ptype == "g" else ""):
            raise ConfigurationError(
                f"{where}: {NO_ROLE!r} is reserved for callers without a membership"
            )
        if ptype == "g":
            continue
        _, _role, status, third, rel = cells
        if status not in statuses:
            raise ConfigurationError(f"{where}: status must be one of {sorted(statuses)}")
        if rel not in relations:
            raise ConfigurationError(f"{where}: relation must be one of {sorted(relations)}")
        if ptype == "p2" and third not in _VISIBILITIES:
            raise ConfigurationError(f"{where}: visibility must be one of {list(_VISIBILITIES)}")
        if ptype == "p" and third == _WILDCARD:
            raise ConfigurationError(f"{where}: actions are matched exactly; '*' matches nothing")


def _check_hierarchy(path: Path, g: list[list[str]]) -> None:
    """The role hierarchy must be acyclic: a cycle would make every role the top role."""
    parents: dict[str, set[str]] = {}
    for child, parent in ((r[0], r[1]) for r in g):
        parents.setdefault(child, set()).add(parent)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in parents.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    for role in parents:
        if reaches(role, role, {role}):
            raise ConfigurationError(f"{path}: the role hierarchy has a cycle through {role!r}")


def _roles(g: list[list[str]], p: list[list[str]], p2: list[list[str]]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for rule in g:
        seen.setdefault(rule[0])
        seen.setdefault(rule[1])
    for rule in (*p, *p2):
        seen.setdefault(rule[0])
    return tuple(seen)


def _top_role(roles: tuple[str, ...], g: list[list[str]]) -> str | None:
    """The role nothing inherits from (owner): used to tell "insufficient role" apart."""
    inherited = {rule[1] for rule in g}
    parents = {rule[0] for rule in g}
    tops = [r for r in roles if r in parents and r not in inherited]
    return tops[0] if len(tops) == 1 else None
