"""Safe policy rollout (docs/policy-rollout.md): a candidate policy is compiled and checked
off to the side, then swapped in whole; a bad one never activates.

``candidate`` compiles and checks a policy directory (the ``policy check --strict`` rules
and the ``policy test`` tables it ships); ``live`` holds the live policy of one
``Authorizer`` and swaps it (from watched files, or from versions in the database:
``database``); ``shadow`` evaluates a candidate beside the live policy on real traffic
and logs every would-be difference, enforcing nothing.
"""

from __future__ import annotations

from .candidate import PolicyRejected, compile_candidate, policy_files
from .live import FileRollout, PolicyRollout, RolloutStatus
from .shadow import ShadowPolicy, ShadowStats

__all__ = [
    "FileRollout",
    "PolicyRejected",
    "PolicyRollout",
    "RolloutStatus",
    "ShadowPolicy",
    "ShadowStats",
    "compile_candidate",
    "policy_files",
]
