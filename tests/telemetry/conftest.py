"""The facts both telemetry test files decide over: alice, a member of w1, who may read
a1 and not bob's private ``hidden``."""

from __future__ import annotations

import pytest

from illumichat_authz.testing import FactsBuilder


@pytest.fixture
def authz_facts() -> FactsBuilder:
    builder = FactsBuilder()
    builder.workspace("w1").member("alice", role="member").assistant(
        "a1", visibility="workspace", creator="alice"
    ).assistant("hidden", visibility="private", creator="bob")
    return builder
