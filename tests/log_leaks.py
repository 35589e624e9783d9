"""A pytest plugin (``-p log_leaks`` in pyproject's addopts): the whole suite runs with our
log captured, and the run fails if a JWT, JWE, API key, session cookie or Twilio signature
ever appears in it.

Captured: every record of the ``illumichat_authz`` loggers, at every level (DEBUG on), its
message and its traceback; and the decision log is on (every allow too, to ``logging``) for
every ``Authorizer.from_settings`` whose settings name no sink, so the decision events of
the suite's servers, adapters and CLI runs in this process are scanned as well. Each
record is scanned when it is emitted (nothing is kept): for the shapes of our
credentials, and for every credential the test kit minted during the run
(``session_cookie``, ``LocalIssuer.mint``, ``issue_api_key``, ``sign_twilio`` are wrapped
to remember what they return). ``tests/test_log_leaks.py`` plants a leak to show the scan
finds one.
"""

from __future__ import annotations

import functools
import logging
import re
import traceback
from typing import Any

import pytest

#: Credential shapes: a compact JWS/JWE ("eyJ" is base64url of '{"'), an IllumiChat API
#: key, a cookie or bearer header with its value.
SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"
    r"|ick_[A-Za-z0-9]{6,}_[A-Za-z0-9]{8,}"
    r"|session-token=[^;\s\"']{16,}"
    r"|[Bb]earer [A-Za-z0-9._~+/-]{16,}"
)
#: Candidate words to look up among the minted credentials (Twilio signatures have no
#: shape of their own: 28 or 44 base64 characters).
_WORDS = re.compile(r"[A-Za-z0-9+/=._~-]{20,}")


class LeakScanner(logging.Handler):
    """Scans each record as it is emitted; keeps only what it found (at most 50)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.minted: set[str] = set()
        self.hits: list[str] = []
        self.records = 0

    def remember(self, secret: Any) -> None:
        text = str(secret)
        if len(text) >= 20:
            self.minted.add(text)
            # A cookie "name=value" and a JWT's parts are credentials on their own.
            self.minted.update(p for p in re.split(r"[=;.\s]", text) if len(p) >= 20)

    def scan(self, text: str, where: str) -> None:
        """One hit per record that holds a credential (the first one it shows)."""
        shape = SHAPES.search(text)
        found = shape.group(0) if shape is not None else None
        if found is None:
            found = next((w for w in _WORDS.findall(text) if w in self.minted), None)
        if found is not None and len(self.hits) < 50:
            self.hits.append(f"{where}: {found[:60]}...")

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not format: scan its parts
            text = f"{record.msg} {record.args}"
        if record.exc_info and record.exc_info[1] is not None:
            text += "".join(traceback.format_exception(*record.exc_info))
        authz = getattr(record, "authz", None)
        if authz is not None:
            text += f" {authz}"
        self.scan(text, f"{record.name} ({record.pathname}:{record.lineno})")


SCANNER = LeakScanner()
_KEY = pytest.StashKey[dict[str, Any]]()


def _remembering(function: Any) -> Any:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        for value in result if isinstance(result, tuple) else (result,):
            if isinstance(value, str):
                SCANNER.remember(value)
        return result

    return wrapper


def _logging_decisions(build: Any) -> Any:
    """``authorizer._decision_log``, with every decision logged where no sink is named."""

    @functools.wraps(build)
    def wrapper(settings: Any, core: Any, database: Any) -> Any:
        found = build(settings, core, database)
        if found is not None:
            return found
        from illumichat_authz.audit import DecisionLog, LoggingSink

        return DecisionLog([LoggingSink()], allows=1.0, policy_revision=core.policy_revision)

    return wrapper


def pytest_configure(config: pytest.Config) -> None:
    from illumichat_authz import authorizer
    from illumichat_authz.credentials import apikeys
    from illumichat_authz.testing import minting

    logger = logging.getLogger("illumichat_authz")
    config.stash[_KEY] = {"level": logger.level}
    authorizer._decision_log = _logging_decisions(authorizer._decision_log)
    logger.setLevel(logging.DEBUG)
    logger.addHandler(SCANNER)
    minting.session_cookie = _remembering(minting.session_cookie)
    minting.sign_twilio = _remembering(minting.sign_twilio)
    minting.LocalIssuer.mint = _remembering(minting.LocalIssuer.mint)
    apikeys.issue_api_key = _remembering(apikeys.issue_api_key)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stash = session.config.stash.get(_KEY, None)
    if stash is None:
        return
    logging.getLogger("illumichat_authz").removeHandler(SCANNER)
    if SCANNER.hits:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"credentials found in the log ({len(SCANNER.hits)} shown):", *SCANNER.hits]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(
        f"log leak scan: {SCANNER.records} log records scanned, "
        f"{len(SCANNER.minted)} minted credential values watched, {len(SCANNER.hits)} leaks"
    )
