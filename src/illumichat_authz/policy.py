"""Role and visibility rules: the Casbin files in ``policies/``, compiled for speed.

Casbin is the source of truth. The model's request is a few attributes whose values
the policy file itself names (roles from the ``g`` lines and rule subjects, actions from
the ``p`` lines, resource kinds and their visibility values from the ``p2`` lines) plus
two closed sets (``vocab``: statuses and relations), so the whole attribute space is
small (a few thousand points). At load time we ask casbin's own ``enforce_ex`` about
every point once and keep the answers, with the rule that decided, in a dict. Per
request, a decision is then one dict lookup instead of a scan of the policy lines;
``tests/test_policy_equivalence.py`` checks the table against casbin over the whole
space. Editing the policy files (a rule, a role, a resource kind with its visibility
values) changes decisions with no code change.

casbin is imported only when a policy is compiled (:func:`_load_enforcer`): importing
this module, or deciding with a compiled ``Policy``, never needs it.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .reasons import Reason
from .vocab import NO_ROLE, MembershipStatus, Relation, canonical

__all__ = ["Key", "Policy", "Verdict"]

_WILDCARD = "*"
_STATUSES = tuple(s.value for s in MembershipStatus)
_RELATIONS = tuple(r.value for r in Relation)

#: A point of the attribute space: (role, status, act, rel, kind, vis). ``kind`` and
#: ``vis`` are both ``None`` for an action on a resource without visibility.
Key = tuple[str, str, str, str, str | None, str | None]
_P = tuple[str, str, str, str]  # role, status, act, rel
_P2 = tuple[str, str, str, str, str]  # role, status, kind, vis, rel


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

    def __init__(self, *, model_path: Path, policy_path: Path) -> None:
        # Not from two threads at once: casbin's ``ast`` parsing is not thread-safe on
        # CPython 3.11 (``compile.build_core`` holds the lock that serialises it).
        self.model_path = model_path
        self.policy_path = policy_path
        #: casbin's enforcer over the same files: the reference the table equals.
        self.enforcer = _load_enforcer(model_path, policy_path)
        try:
            self._ctx2 = self.enforcer.new_enforce_context("2")
            model = self.enforcer.get_model()
            p_rules = tuple(tuple(r) for r in model.get_policy("p", "p"))
            p2_rules = tuple(tuple(r) for r in model.get_policy("p", "p2"))
            g_rules = tuple(tuple(r) for r in model.get_policy("g", "g"))
        except Exception as exc:  # a model without p, p2 or g sections
            raise ConfigurationError(
                f"{model_path}: the model must define r/p/e/m, r2/p2/e2/m2 and g: {exc!r}"
            ) from None
        #: The rules as read: ``p`` (role, status, act, rel), ``p2`` (role, status, kind,
        #: vis, rel) and ``g`` (role, inherited role) lines, for ``policy check``.
        self.p_rules: tuple[tuple[str, ...], ...] = p_rules
        self.p2_rules: tuple[tuple[str, ...], ...] = p2_rules
        self.g_rules: tuple[tuple[str, ...], ...] = g_rules
        _check_hierarchy(policy_path, g_rules)
        #: Every role the policy names: the g hierarchy first, then other rule subjects.
        self.roles: tuple[str, ...] = _roles(g_rules, p_rules, p2_rules)
        self.actions: frozenset[str] = frozenset(canonical(r[2]) for r in p_rules)
        #: The visibility values of each resource kind the p2 lines name.
        self.visibilities: Mapping[str, tuple[str, ...]] = _visibilities(p2_rules)
        self.top_role = _top_role(self.roles, g_rules)
        try:
            #: (role, status, act, rel, kind, vis) -> Verdict over the whole attribute space.
            self.table: Mapping[Key, Verdict] = self._compile()
        except Exception as exc:  # matcher syntax errors surface on the first enforce
            raise ConfigurationError(f"{model_path}: cannot evaluate the model: {exc!r}") from None
        # (action, kind, visibility) triples whose verdict can change when the caller holds
        # a grant; elsewhere the grant need not be looked up at all.
        none, grantee = Relation.NONE.value, Relation.GRANTEE.value
        self.grant_sensitive: frozenset[tuple[str, str | None, str | None]] = frozenset(
            (act, kind, vis)
            for (role, status, act, rel, kind, vis), verdict in self.table.items()
            if rel == grantee
            and (verdict.allowed, verdict.reason)
            != (
                self.table[(role, status, act, none, kind, vis)].allowed,
                self.table[(role, status, act, none, kind, vis)].reason,
            )
        )

    def grant_matters(self, act: str, kind: str | None, vis: str | None) -> bool:
        """Whether holding a grant can change the verdict for ``act`` on a ``vis`` ``kind``."""
        return (act, kind, vis) in self.grant_sensitive

    def verdict(
        self, role: str, status: str, act: str, rel: str, kind: str | None, vis: str | None
    ) -> Verdict:
        """The verdict for one point; values outside the space are a deny, never an error.

        A visibility value no p2 line names gets what casbin would answer for it: the
        role table's deny, or else "not visible" (no p2 rule can match it).
        """
        found = self.table.get((role, status, act, rel, kind, vis))
        if found is not None:
            return found
        base = self.table.get((role, status, act, rel, None, None))
        if base is not None and kind is not None:
            if not base.allowed:
                return base
            return Verdict(
                False,
                Reason.NOT_VISIBLE,
                (
                    *base.explanation,
                    f"but no p2 rule in {self.policy_path.name} names a {vis} {kind}"
                    if vis is not None
                    else f"but the {kind} has no visibility, so no p2 rule can match",
                ),
                f"this {vis} {kind} is not visible to you"
                if vis is not None
                else f"this {kind} has no visibility and is not visible to you",
            )
        return Verdict(
            False,
            Reason.POLICY_DENIED,
            (f"no policy rule covers role={role} status={status} action={act}",),
            f"the policy does not allow {act}",
        )

    def space(self) -> Iterator[Key]:
        """Every point of the attribute space the table covers."""
        kinds: tuple[tuple[str | None, str | None], ...] = (
            (None, None),
            *((kind, vis) for kind, values in self.visibilities.items() for vis in values),
        )
        for role, status, act, rel in product(
            (*self.roles, NO_ROLE), _STATUSES, sorted(self.actions), _RELATIONS
        ):
            for kind, vis in kinds:
                yield (role, status, act, rel, kind, vis)

    # --- compiling: casbin's answer at every point ---------------------------------
    def _compile(self) -> dict[Key, Verdict]:
        roles = (*self.roles, NO_ROLE)
        enforce_ex, ctx2 = self.enforcer.enforce_ex, self._ctx2
        p: dict[_P, tuple[bool, list[str]]] = {}
        for p_key in product(roles, _STATUSES, sorted(self.actions), _RELATIONS):
            ok, rule = enforce_ex(*p_key)
            p[p_key] = (bool(ok), list(rule))
        p2: dict[_P2, tuple[bool, list[str]]] = {}
        for role, status, (kind, vis), rel in product(
            roles,
            _STATUSES,
            [(k, v) for k, values in self.visibilities.items() for v in values],
            _RELATIONS,
        ):
            ok, rule = enforce_ex(ctx2, role, status, kind, vis, rel)
            p2[(role, status, kind, vis, rel)] = (bool(ok), list(rule))
        table: dict[Key, Verdict] = {}
        for key in self.space():
            v = self._verdict(key, p, p2)
            # Canonical strings (vocab.canonical): the rules' keys then match by identity.
            canon = tuple(x if x is None else canonical(x) for x in key)
            table[canon] = Verdict(v.allowed, v.reason, v.explanation, _message(v, key))  # type: ignore[index]
        return table

    def _verdict(
        self,
        key: Key,
        p: dict[_P, tuple[bool, list[str]]],
        p2: dict[_P2, tuple[bool, list[str]]],
    ) -> Verdict:
        role, status, act, rel, kind, vis = key
        active = MembershipStatus.ACTIVE.value
        ok, rule = p[(role, status, act, rel)]
        where = f"role={role} status={status} action={act} relation={rel}"
        if role == NO_ROLE:
            return Verdict(
                False, Reason.NOT_A_MEMBER, ("the caller has no membership in the workspace",)
            )
        if not ok:
            if p[(role, active, act, rel)][0]:
                reason = Reason.MEMBERSHIP_INACTIVE
            elif self.top_role and p[(self.top_role, status, act, rel)][0]:
                reason = Reason.INSUFFICIENT_ROLE
            else:
                reason = Reason.POLICY_DENIED
            return Verdict(False, reason, (f"no p rule in {self.policy_path.name} allows {where}",))
        explanation = (_line("p", rule),)
        if kind is None or vis is None:
            return Verdict(True, Reason.ALLOWED, explanation)
        ok2, rule2 = p2[(role, status, kind, vis, rel)]
        if ok2:
            return Verdict(True, Reason.ALLOWED, (*explanation, _line("p2", rule2)))
        reason = (
            Reason.MEMBERSHIP_INACTIVE
            if p2[(role, active, kind, vis, rel)][0]
            else Reason.NOT_VISIBLE
        )
        return Verdict(
            False,
            reason,
            (
                *explanation,
                f"but no p2 rule in {self.policy_path.name} lets role={role} "
                f"status={status} relation={rel} see a {vis} {kind}",
            ),
        )


def _message(verdict: Verdict, key: Key) -> str:
    role, _, act, _, kind, vis = key
    reason = verdict.reason
    if verdict.allowed:
        return f"{role} may {act}"
    if reason is Reason.NOT_A_MEMBER:
        return "you are not a member of this workspace"
    if reason is Reason.MEMBERSHIP_INACTIVE:
        return f"your membership in this workspace is not active, so {act} is not allowed"
    if reason is Reason.INSUFFICIENT_ROLE:
        return f"your role ({role}) does not allow {act} here"
    if reason is Reason.NOT_VISIBLE:
        return f"this {vis} {kind} is not visible to you"
    return f"the policy does not allow {act}"


def _load_enforcer(model_path: Path, policy_path: Path) -> Any:
    for path in (model_path, policy_path):
        if not path.is_file():
            raise ConfigurationError(f"policy file not found: {path}")
    _check_csv(policy_path)
    # pycasbin disables the process-wide "casbin" logger when it builds an enforcer;
    # leave the host's logging as we found it.
    casbin_logger = logging.getLogger("casbin")
    was_disabled = casbin_logger.disabled
    import casbin  # only here: compiling is start-up work, deciding never needs casbin

    try:
        return casbin.Enforcer(str(model_path), str(policy_path))
    except Exception as exc:  # casbin raises bare exceptions for syntax errors
        raise ConfigurationError(f"{model_path}: cannot load casbin model/policy: {exc}") from None
    finally:
        casbin_logger.disabled = was_disabled


def _check_csv(policy_path: Path) -> None:
    """Catch what casbin would silently accept, with the line at fault.

    Unknown rule types, wrong column counts, statuses and relations outside the
    vocabulary, and wildcards where the model compares exactly (which the compiled table
    could not represent) are refused here. Roles, actions, resource kinds and visibility
    values are whatever the lines name.
    """
    widths = {"p": 5, "p2": 6, "g": 3}
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
        status, rel = cells[2], cells[-1]
        if status not in statuses:
            raise ConfigurationError(f"{where}: status must be one of {sorted(statuses)}")
        if rel not in relations:
            raise ConfigurationError(f"{where}: relation must be one of {sorted(relations)}")
        # Actions, kinds and visibility values are compared exactly (``==`` in the model).
        exact = (
            (("action", "actions"),)
            if ptype == "p"
            else (("resource kind", "resource kinds"), ("visibility", "visibility values"))
        )
        for (name, plural), value in zip(exact, cells[3:-1], strict=True):
            if value == _WILDCARD:
                raise ConfigurationError(
                    f"{where}: {plural} are matched exactly; '*' matches nothing"
                )
            if value == "-" or any(c.isspace() for c in value):
                raise ConfigurationError(f"{where}: {value!r} is not a {name}")


def _check_hierarchy(path: Path, g: Iterable[tuple[str, ...]]) -> None:
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


def _roles(
    g: Iterable[tuple[str, ...]], p: Iterable[tuple[str, ...]], p2: Iterable[tuple[str, ...]]
) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for rule in g:
        seen.setdefault(rule[0])
        seen.setdefault(rule[1])
    for rule in (*p, *p2):
        seen.setdefault(rule[0])
    return tuple(seen)


def _visibilities(p2: Iterable[tuple[str, ...]]) -> Mapping[str, tuple[str, ...]]:
    out: dict[str, dict[str, None]] = {}
    for rule in p2:
        out.setdefault(rule[2], {}).setdefault(rule[3])
    return {kind: tuple(values) for kind, values in out.items()}


def _top_role(roles: tuple[str, ...], g: Iterable[tuple[str, ...]]) -> str | None:
    """The role nothing inherits from (owner): used to tell "insufficient role" apart."""
    g = tuple(g)
    inherited = {rule[1] for rule in g}
    parents = {rule[0] for rule in g}
    tops = [r for r in roles if r in parents and r not in inherited]
    return tops[0] if len(tops) == 1 else None
