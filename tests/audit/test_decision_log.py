"""The decision log: what an event holds, that no credential reaches it, sampling, a full
queue, a failing sink, and the configuration, on a real Authorizer with credentials minted
by the test kit (an Auth.js session, an RS256 bearer from the loopback JWKS, an API key, a
Twilio signature)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from illumichat_authz import Authorizer, CredentialKind, Principal, RequestFacts, Settings
from illumichat_authz.audit import FIELDS, REDACTED, DecisionEvent, DecisionLog, scrub
from illumichat_authz.audit.sinks import LoggingSink, NdjsonSink, event_json
from illumichat_authz.errors import ConfigurationError
from illumichat_authz.facts import InMemoryFacts
from illumichat_authz.stores.api_keys import MemoryApiKeyStore
from illumichat_authz.testing import FactsBuilder

ASSISTANT = "/api/assistants/{}"


class ListSink:
    def __init__(self) -> None:
        self.events: list[DecisionEvent] = []

    def write(self, events: Sequence[DecisionEvent]) -> None:
        self.events.extend(events)

    def close(self) -> None:
        pass

    def text(self) -> str:
        return "".join(event_json(e) + "\n" for e in self.events)


@pytest.fixture
def facts() -> InMemoryFacts:
    builder = FactsBuilder()
    builder.workspace("w1").member("alice", role="member").assistant(
        "a1", visibility="workspace", creator="alice"
    ).assistant("secret-a", visibility="private", creator="bob")
    return builder.facts


def logged(
    authorizer: Authorizer, facts: InMemoryFacts, api_keys: MemoryApiKeyStore, **options: Any
) -> tuple[Authorizer, ListSink]:
    sink = ListSink()
    log = DecisionLog([sink], policy_revision=authorizer.core.policy_revision, **options)
    return (
        Authorizer(
            core=authorizer.core,
            facts=facts,
            api_keys=api_keys,
            jwks=authorizer.jwks,
            decision_log=log,
        ),
        sink,
    )


def test_a_deny_is_one_event_of_the_allow_listed_fields(
    authorizer: Authorizer,
    authz_api_keys: MemoryApiKeyStore,
    facts: InMemoryFacts,
    mint_session: Callable[..., Any],
) -> None:
    authz, sink = logged(authorizer, facts, authz_api_keys)
    cookie = mint_session("alice", workspace="w1")
    request = RequestFacts(
        method="GET",
        path=ASSISTANT.format("secret-a"),
        headers=(
            ("cookie", str(cookie)),
            ("x-request-id", "req-42"),
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ),
        peer="127.0.0.1",
    )
    decision = authz.decide(request)
    assert decision.status == 403
    authz.decision_log.flush()  # type: ignore[union-attr]
    [event] = sink.events
    data = json.loads(event_json(event))
    assert tuple(data) == FIELDS
    assert re.fullmatch(r"[0-9a-f]{32}", data["decision_id"])
    assert abs(int(data["decision_id"][:12], 16) / 1000 - time.time()) < 60  # time first
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["time"])
    assert data | {"decision_id": "", "time": "", "latency_us": 0} == {
        "decision_id": "",
        "time": "",
        "request_id": "req-42",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "principal": "alice",
        "credential": "session",
        "credential_id": decision.principal.credential_id,  # type: ignore[union-attr]
        "route": "GET /api/assistants/{assistantId}",
        "action": "assistant:read",
        "resource_kind": "assistant",
        "resource_id": "secret-a",
        "workspace": "w1",
        "status": 403,
        "reason": str(decision.reason),
        "policy_revision": authorizer.core.policy_revision,
        "facts_revision": None,
        "latency_us": 0,
    }
    assert len(authorizer.core.policy_revision) == 12
    assert 0 < data["latency_us"] < 1_000_000


def test_allows_none_all_or_a_sample(
    authorizer: Authorizer, authz_api_keys: MemoryApiKeyStore, facts: InMemoryFacts
) -> None:
    alice = Principal(user_id="alice", kind=CredentialKind.SESSION)

    def run(allows: float, n: int) -> tuple[int, int]:
        authz, sink = logged(authorizer, facts, authz_api_keys, allows=allows)
        for _ in range(n):
            authz.decide_access(
                principal=alice,
                action="assistant:read",
                resource_kind="assistant",
                resource_id="a1",
            )
            authz.decide_access(
                principal=alice,
                action="assistant:read",
                resource_kind="assistant",
                resource_id="secret-a",
            )
        authz.close()
        allowed = sum(e.status == 200 for e in sink.events)
        return allowed, len(sink.events) - allowed

    assert run(0.0, 200) == (0, 200)  # every deny, no allow
    assert run(1.0, 200) == (200, 200)
    allowed, denied = run(0.25, 4000)
    assert denied == 4000
    assert 850 <= allowed <= 1150  # 1000 expected; 5.5 standard deviations either side


def test_a_full_queue_drops_and_counts_without_blocking(
    authorizer: Authorizer,
    authz_api_keys: MemoryApiKeyStore,
    facts: InMemoryFacts,
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    class Stuck(ListSink):
        def write(self, events: Sequence[DecisionEvent]) -> None:
            release.wait(10)
            super().write(events)

    sink = Stuck()
    log = DecisionLog([sink], queue_size=100)
    authz = Authorizer(core=authorizer.core, facts=facts, decision_log=log)
    request = RequestFacts(method="GET", path=ASSISTANT.format("a1"), peer="127.0.0.1")
    t0 = time.monotonic()
    for _ in range(2000):
        assert authz.decide(request).status == 401
    assert time.monotonic() - t0 < 5  # the stuck sink never held a decision up
    stats = log.stats()
    assert stats.dropped >= 2000 - 100 - 5000  # at most the queue and one batch in flight
    assert stats.dropped > 0
    release.set()
    with caplog.at_level(logging.WARNING, logger="illumichat_authz.audit"):
        log.close()
    stats = log.stats()
    assert stats.written + stats.dropped == 2000
    assert len(sink.events) == stats.written
    assert "dropped" in caplog.text


def test_a_failing_sink_is_counted_and_the_others_still_write(
    authorizer: Authorizer, facts: InMemoryFacts
) -> None:
    class Broken:
        def write(self, events: Sequence[DecisionEvent]) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            raise OSError("still full")

    good = ListSink()
    log = DecisionLog([Broken(), good])
    authz = Authorizer(core=authorizer.core, facts=facts, decision_log=log)
    request = RequestFacts(method="GET", path=ASSISTANT.format("a1"), peer="127.0.0.1")
    assert [authz.decide(request).status for _ in range(3)] == [401, 401, 401]
    authz.close()
    assert len(good.events) == 3
    assert log.stats().sink_errors >= 1


def test_the_writer_thread_writes_without_a_flush(
    authorizer: Authorizer, facts: InMemoryFacts
) -> None:
    sink = ListSink()
    authz = Authorizer(core=authorizer.core, facts=facts, decision_log=DecisionLog([sink]))
    authz.decide(RequestFacts(method="GET", path=ASSISTANT.format("a1"), peer="127.0.0.1"))
    deadline = time.monotonic() + 5
    while not sink.events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(sink.events) == 1
    authz.close()


def test_every_entry_point_is_logged(
    authorizer: Authorizer,
    authz_api_keys: MemoryApiKeyStore,
    facts: InMemoryFacts,
    mint_session: Callable[..., Any],
) -> None:
    authz, sink = logged(authorizer, facts, authz_api_keys, allows=1.0)
    alice = Principal(user_id="alice", kind=CredentialKind.SESSION)
    request = RequestFacts(
        method="GET",
        path=ASSISTANT.format("a1"),
        headers=(("cookie", str(mint_session("alice", workspace="w1"))),),
        peer="127.0.0.1",
    )
    access = {"principal": alice, "action": "assistant:read", "resource_kind": "assistant"}

    async def run() -> None:
        await authz.adecide(request)
        await authz.aidentify(request)
        await authz.adecide_access(**access, resource_id="a1")
        await authz.adecide_access_many(**access, resource_ids=["a1", "secret-a"])

    authz.decide(request)
    authz.identify(request)
    authz.decide_access(**access, resource_id="a1")
    authz.decide_access_many(**access, resource_ids=["a1", "secret-a"])
    asyncio.run(run())
    authz.close()
    assert [e.status for e in sink.events] == [200, 200, 200, 200, 403] * 2
    assert [e.route for e in sink.events][:2] == ["GET /api/assistants/{assistantId}", None]


# -- no credential ever reaches the log ----------------------------------------------------


def _credentials(
    mint_session: Callable[..., Any],
    mint_bearer: Callable[..., str],
    mint_api_key: Callable[..., str],
    sign_twilio: Callable[..., str],
) -> dict[str, str]:
    cookie = mint_session("alice", workspace="w1")
    return {
        "cookie": cookie.value,
        "bearer": mint_bearer("alice", workspace="w1"),
        "api_key": mint_api_key("alice", "w1"),
        "twilio": sign_twilio("https://api.example.com/api/sms/webhook/a1", {"Body": "hi"}),
    }


def _requests(secrets: dict[str, str]) -> Iterator[RequestFacts]:
    """Each credential presented properly, tampered with, and smuggled into every field a
    caller writes that an event could take (a path id, x-request-id, the query)."""
    signed_in = (("cookie", f"authjs.session-token={secrets['cookie']}"),)
    for secret in secrets.values():
        placements = [
            (("cookie", f"authjs.session-token={secret}"),),
            (("authorization", f"Bearer {secret}"),),
            (("authorization", f"Bearer {secret[:-2]}xx"),),
            (("x-request-id", secret),),
            (("x-twilio-signature", secret),),
            (("traceparent", secret),),
        ]
        for headers in placements:
            yield RequestFacts(
                method="GET", path=ASSISTANT.format("a1"), headers=headers, peer="127.0.0.1"
            )
        # Signed in, so the resource is looked up and its id is in the decision.
        yield RequestFacts(
            method="GET", path=ASSISTANT.format(secret), headers=signed_in, peer="127.0.0.1"
        )
        yield RequestFacts(
            method="GET", path=ASSISTANT.format("a1"), query=f"token={secret}", peer="127.0.0.1"
        )
        yield RequestFacts(
            method="POST",
            path="/api/sms/webhook/a1",
            headers=(
                ("x-twilio-signature", secret),
                ("content-type", "application/x-www-form-urlencoded"),
            ),
            body=f"Body={secret}".encode(),
            peer="127.0.0.1",
        )


def _pieces(secret: str) -> list[str]:
    """The secret and every part of it long enough to matter (a JWT's signature alone, an
    API key's secret half)."""
    parts = [secret, *re.split(r"[._]", secret)]
    return [p for p in parts if len(p) >= 16]


def test_no_credential_reaches_an_event(
    authorizer: Authorizer,
    authz_api_keys: MemoryApiKeyStore,
    facts: InMemoryFacts,
    mint_session: Callable[..., Any],
    mint_bearer: Callable[..., str],
    mint_api_key: Callable[..., str],
    sign_twilio: Callable[..., str],
) -> None:
    secrets = _credentials(mint_session, mint_bearer, mint_api_key, sign_twilio)
    authz, sink = logged(authorizer, facts, authz_api_keys, allows=1.0)
    requests = list(_requests(secrets))
    statuses = [authz.decide(r).status for r in requests]
    authz.close()
    assert len(sink.events) == len(requests)
    assert 200 in statuses  # real credentials, accepted
    assert 401 in statuses  # and refused
    text = sink.text()
    for secret in secrets.values():
        for piece in _pieces(secret):
            assert piece not in text
    # The token in the path is logged as redacted, not dropped.
    assert any(e.resource_id == REDACTED for e in sink.events)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    filler=st.text(st.characters(codec="ascii", exclude_characters="/?#\\"), max_size=40),
    which=st.sampled_from(["cookie", "bearer", "api_key", "twilio"]),
    where=st.sampled_from(["path", "request_id"]),
)
def test_a_credential_inside_any_text_is_redacted(
    authorizer: Authorizer,
    authz_api_keys: MemoryApiKeyStore,
    facts: InMemoryFacts,
    mint_session: Callable[..., Any],
    mint_bearer: Callable[..., str],
    mint_api_key: Callable[..., str],
    sign_twilio: Callable[..., str],
    filler: str,
    which: str,
    where: str,
) -> None:
    secret = _credentials(mint_session, mint_bearer, mint_api_key, sign_twilio)[which]
    value = f"{filler}{secret}" if which != "twilio" else secret
    authz, sink = logged(authorizer, facts, authz_api_keys, allows=1.0)
    if where == "path":
        request = RequestFacts(
            method="GET", path=ASSISTANT.format(value.strip() or "x"), peer="::1"
        )
    else:
        request = RequestFacts(
            method="GET",
            path=ASSISTANT.format("a1"),
            headers=(("x-request-id", value),),
            peer="::1",
        )
    authz.decide(request)
    authz.close()
    text = sink.text()
    for piece in _pieces(secret):
        assert piece not in text


@given(st.text(max_size=300))
def test_scrub_passes_only_short_text_with_no_credential_shape(value: str) -> None:
    out = scrub(value)
    assert out in (value, REDACTED)
    if out == value:
        assert len(value) <= 200
        assert "eyJ" not in value or "." not in value.split("eyJ", 1)[1]
        assert "ick_" not in value.lower()


# -- configuration -------------------------------------------------------------------------


def _settings(tmp_path: Path, **log: Any) -> Settings:
    return Settings.model_validate(
        {"session": {"secrets": ["s" * 32]}, "decision_log": log, "policies": {}}
    )


def test_file_and_logging_sinks_from_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "decisions.ndjson"
    authz = Authorizer.from_settings(_settings(tmp_path, sinks=[f"file:{path}", "logging"]))
    with caplog.at_level(logging.INFO, logger="illumichat_authz.decisions"):
        for _ in range(3):
            authz.decide(RequestFacts(method="GET", path="/api/assistants/a1", peer="127.0.0.1"))
        authz.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["status"] for line in lines] == [401, 401, 401]
    records = [r for r in caplog.records if r.name == "illumichat_authz.decisions"]
    assert [json.loads(r.getMessage())["reason"] for r in records] == [
        "authentication_required"
    ] * 3
    assert records[0].authz["route"] == "GET /api/assistants/{assistantId}"  # type: ignore[attr-defined]


def test_stdout_sink(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    authz = Authorizer.from_settings(_settings(tmp_path, sinks=["stdout"], allows="all"))
    authz.decide(RequestFacts(method="GET", path="/api/widget/a1/config", peer="127.0.0.1"))
    authz.close()
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["reason"] == "public"


@pytest.mark.parametrize(
    ("log", "message"),
    [
        ({"sinks": ["syslog"]}, "not a sink"),
        ({"sinks": ["stdout", "stdout"]}, "twice"),
        ({"sinks": ["stdout"], "allows": 1.5}, "between 0 and 1"),
        ({"sinks": ["stdout"], "queue_size": 1}, "queue_size"),
    ],
)
def test_bad_settings_are_refused(log: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message):
        Settings.model_validate({"decision_log": log})


def test_a_database_sink_needs_a_database(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="needs \\[database\\] url"):
        Authorizer.from_settings(_settings(tmp_path, sinks=["database"]))


def test_an_unwritable_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot open"):
        Authorizer.from_settings(_settings(tmp_path, sinks=[f"file:{tmp_path}/no/such/dir/x"]))


def test_sinks_write_ascii_ndjson(tmp_path: Path) -> None:
    sink = NdjsonSink(tmp_path / "x.ndjson")
    LoggingSink()  # constructible without a handler
    event = DecisionEvent(*(["é"] * 2), *([None] * 10), 403, "policy_denied", None, None, 1.0)
    sink.write([event])
    sink.close()
    text = (tmp_path / "x.ndjson").read_text(encoding="ascii")
    assert json.loads(text)["decision_id"] == "é"
