"""Prometheus metrics: every decision counted exactly (also from many threads at once),
the stores' own numbers read at scrape time, the configuration, and a real ``serve``
answering ``/metrics`` and ``/readyz`` over loopback."""

from __future__ import annotations

import collections
import json
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_serve_cli import CLI, free_port, listening, running

from illumichat_authz import Authorizer, Decision, RequestFacts, load_settings
from illumichat_authz.audit import DecisionLog
from illumichat_authz.cli import main
from illumichat_authz.errors import ConfigurationError
from illumichat_authz.stores.jwks import JwksCache
from illumichat_authz.telemetry import DecisionMetrics, decision_metrics
from illumichat_authz.telemetry.counts import FOLD_AT
from illumichat_authz.telemetry.prometheus import exposition, registry_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(authorizer: Authorizer) -> Samples:
    return parse(exposition(registry_for(authorizer)).decode())


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def decisions_in(samples: Samples) -> dict[tuple[int, str], float]:
    return {
        (int(dict(labels)["status"]), dict(labels)["reason"]): value
        for (name, labels), value in samples.items()
        if name == "illumichat_authz_decisions_total"
    }


def expected(decisions: Iterable[Decision]) -> dict[tuple[int, str], int]:
    return dict(collections.Counter((d.status, str(d.reason)) for d in decisions))


def requests(cookie: str) -> list[RequestFacts]:
    def get(path: str, *headers: tuple[str, str]) -> RequestFacts:
        return RequestFacts(method="GET", path=path, headers=headers, peer="10.0.0.1")

    auth = ("cookie", cookie)
    return [
        get("/api/assistants/a1", auth),  # 200
        get("/api/assistants/hidden", auth),  # 403
        get("/api/assistants/a1"),  # 401: no credential
        get("/api/assistants/a1", ("cookie", "authjs.session-token=forged")),  # 401
        get("/api/widget/a1/config"),  # public
        get("/api/no/such/route", auth),  # undeclared
    ]


def test_every_decision_is_counted_by_status_and_reason(
    authorizer: Authorizer, mint_session: Callable[..., Any]
) -> None:
    metrics = decision_metrics(authorizer)
    assert decision_metrics(authorizer) is metrics  # one count per authorizer
    made = [authorizer.decide(r) for r in requests(str(mint_session("alice"))) * 7]
    ticket = RequestFacts(method="POST", path="/api/widget/tickets/create", peer="10.0.0.9")
    made += [authorizer.decide(ticket) for _ in range(8)]  # 5/minute: 3 refused
    samples = scrape(authorizer)
    assert decisions_in(samples) == expected(made)
    assert len({status for status, _ in expected(made)}) >= 4
    assert samples[("illumichat_authz_rate_limit_rejections_total", ())] == 3
    assert samples[("illumichat_authz_decision_seconds_count", ())] == len(made)
    assert samples[("illumichat_authz_decision_seconds_bucket", (("le", "+Inf"),))] == len(made)
    assert 0 < samples[("illumichat_authz_decision_seconds_sum", ())] < len(made)
    revision = authorizer.core.policy_revision
    assert samples[("illumichat_authz_policy_info", (("revision", revision), ("version", "")))] == 1
    # the verified session is cached: the first of each 6 presented misses, the rest hit
    hits = samples[
        ("illumichat_authz_cache_lookups_total", (("cache", "credentials"), ("result", "hit")))
    ]
    assert hits >= 7 * 3 - 3


def test_async_decisions_are_counted_too(
    authorizer: Authorizer, mint_session: Callable[..., Any]
) -> None:
    import asyncio

    decision_metrics(authorizer)

    async def run() -> list[Decision]:
        return list(
            await asyncio.gather(
                *(authorizer.adecide(r) for r in requests(str(mint_session("alice"))) * 5)
            )
        )

    made = asyncio.run(run())
    assert decisions_in(scrape(authorizer)) == expected(made)


def test_threads_deciding_while_scrapes_run_lose_no_count(
    authorizer: Authorizer, mint_session: Callable[..., Any]
) -> None:
    decision_metrics(authorizer)
    batch = requests(str(mint_session("alice")))
    per_thread = FOLD_AT // 2 + 17  # every thread's share crosses a fold
    made: list[list[Decision]] = [[] for _ in range(8)]
    done = threading.Event()

    def decide(i: int) -> None:
        out = made[i]
        for n in range(per_thread):
            out.append(authorizer.decide(batch[n % len(batch)]))

    def scraper() -> None:
        while not done.is_set():
            scrape(authorizer)

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(8)]
    reading = threading.Thread(target=scraper)
    reading.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reading.join()
    everything = [d for out in made for d in out]
    assert len(everything) == 8 * per_thread
    samples = scrape(authorizer)
    assert decisions_in(samples) == expected(everything)
    assert samples[("illumichat_authz_decision_seconds_count", ())] == len(everything)


def test_a_failing_fetch_and_a_good_one_are_counted(tmp_path: Path) -> None:
    from illumichat_authz.testing.minting import LocalIssuer

    issuer = LocalIssuer(issuer="https://tenant.example/", audience="api")
    answers: list[Any] = [OSError("tenant down"), json.dumps(issuer.jwks()).encode()]

    class Fetcher:
        def fetch(self, url: str, *, timeout_s: float) -> bytes:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer  # type: ignore[no-any-return]

    cache = JwksCache(url="https://tenant.example/jwks", fetcher=Fetcher(), min_refresh_s=0)
    authorizer = Authorizer(core=Authorizer.from_settings(_settings(tmp_path)).core, jwks=cache)
    for _ in range(2):
        with pytest.raises(Exception):  # noqa: B017, PT011 - 503 first, then 401 (no such kid)
            cache.get_key("no-such-kid", "RS256")
    samples = scrape(authorizer)
    assert samples[("illumichat_authz_jwks_fetches_total", (("result", "error"),))] == 1
    assert samples[("illumichat_authz_jwks_fetches_total", (("result", "ok"),))] == 1


def test_decision_log_drops_are_exported(authorizer: Authorizer) -> None:
    class Nowhere:
        def write(self, events: Any) -> None:
            pass

        def close(self) -> None:
            pass

    log = DecisionLog([Nowhere()], queue_size=100)
    authorizer.decision_log = log
    denied = RequestFacts(method="GET", path="/api/assistants/a1", peer="10.0.0.1")
    with log._drain_lock:  # the writer waits: the queue fills
        for _ in range(130):
            authorizer.decide(denied)
        samples = scrape(authorizer)
    events = "illumichat_authz_decision_log_events_total"
    assert samples[(events, (("outcome", "dropped"),))] == 30
    assert samples[("illumichat_authz_decision_log_queued", ())] == 100
    log.close()
    assert scrape(authorizer)[(events, (("outcome", "written"),))] == 100


def _settings(tmp_path: Path, extra: str = "") -> Any:
    (tmp_path / "facts.json").write_text(
        json.dumps(
            {
                "memberships": [{"user": "bob", "workspace": "w1", "role": "member"}],
                "assistants": [
                    {"id": "a1", "workspace": "w1", "visibility": "workspace", "creator": "bob"}
                ],
            }
        )
    )
    config = tmp_path / "authz.toml"
    config.write_text(
        '[facts]\nfile = "facts.json"\n[session]\nsecrets = ["a-dev-secret-for-metrics"]\n' + extra
    )
    return load_settings(str(config), environment=False)


def test_telemetry_settings_install_the_counts(tmp_path: Path) -> None:
    plain = Authorizer.from_settings(_settings(tmp_path))
    assert not any(isinstance(o, DecisionMetrics) for o in plain.observers)
    counted = Authorizer.from_settings(_settings(tmp_path, "[telemetry]\nmetrics = true\n"))
    assert sum(isinstance(o, DecisionMetrics) for o in counted.observers) == 1


@pytest.mark.parametrize(
    ("section", "module", "extra"),
    [("metrics", "prometheus_client", "metrics"), ("traces", "opentelemetry", "otel")],
)
def test_a_missing_extra_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, module: str, extra: str
) -> None:
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    for name in [m for m in sys.modules if m.startswith("illumichat_authz.telemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigurationError, match=rf"illumichat-authz\[{extra}\]"):
        Authorizer.from_settings(_settings(tmp_path, f"[telemetry]\n{section} = true\n"))


def test_facts_from_the_database_report_cache_fetches_and_revision(tmp_path: Path) -> None:
    """SQLite through the SQL stores: a miss is a round trip, counted and timed; the
    revision gauges are the decision's own."""
    url = f"sqlite:///{tmp_path / 'facts.db'}"
    config = tmp_path / "authz.toml"
    config.write_text(
        f'[session]\nsecrets = ["a-dev-secret-for-metrics"]\n[database]\nurl = "{url}"\n'
        "[telemetry]\nmetrics = true\n"
    )
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    (tmp_path / "facts.json").write_text(
        '{"memberships": [{"user": "bob", "workspace": "w1", "role": "member"}],'
        ' "assistants": [{"id": "a1", "workspace": "w1", "visibility": "workspace",'
        ' "creator": "bob"}]}'
    )
    assert main(["facts", "load", "--config", str(config), str(tmp_path / "facts.json")]) == 0
    authorizer = Authorizer.from_settings(load_settings(str(config), environment=False))
    try:
        from illumichat_authz.testing.minting import session_cookie

        cookie = str(session_cookie("bob", secret="a-dev-secret-for-metrics"))
        request = RequestFacts(
            method="GET", path="/api/assistants/a1", headers=(("cookie", cookie),)
        )
        authorizer.database.feed.check()
        first = authorizer.decide(request)
        second = authorizer.decide(request)
        assert (first.status, second.status) == (200, 200)
        samples = scrape(authorizer)
        facts = authorizer.facts
        lookups = "illumichat_authz_cache_lookups_total"
        miss = samples[(lookups, (("cache", "facts"), ("result", "miss")))]
        assert miss == facts.fetched > 0  # type: ignore[union-attr]
        assert samples[(lookups, (("cache", "facts"), ("result", "hit")))] >= 2  # the second
        assert samples[("illumichat_authz_facts_fetch_seconds_count", ())] >= 1
        assert samples[("illumichat_authz_facts_revision", ())] == second.facts_revision
        assert samples[("illumichat_authz_facts_database_revision", ())] == second.facts_revision
        assert 0 <= samples[("illumichat_authz_facts_lag_seconds", ())] < 60
    finally:
        authorizer.close()


def test_serve_answers_metrics_and_readiness_over_loopback(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "[telemetry]\nmetrics = true\n")
    del settings
    port = free_port()
    config = str(tmp_path / "authz.toml")
    argv = [*CLI, "serve", "--config", config, "--port", str(port)]
    with (
        running(argv, listening(port)),
        httpx.Client(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        statuses = collections.Counter(
            client.get(f"/auth{path}").status_code
            for path in ["/api/assistants/a1", "/api/widget/a1/config"] * 3
        )
        scraped = client.get("/metrics")
        ready = client.get("/readyz")
    assert statuses == {401: 3, 200: 3}
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    samples = parse(scraped.text)
    counted = decisions_in(samples)
    assert {status: n for (status, _), n in counted.items()} == {401: 3, 200: 3}
    body = ready.json()
    assert ready.status_code == 200
    assert body["policy"]["source"] == "files"
    revision = body["policy"]["revision"]
    assert len(revision) == 12
    assert samples[("illumichat_authz_policy_info", (("revision", revision), ("version", "")))]


def test_serve_has_no_metrics_route_unless_configured(tmp_path: Path) -> None:
    _settings(tmp_path)
    port = free_port()
    config = str(tmp_path / "authz.toml")
    with running([*CLI, "serve", "--config", config, "--port", str(port)], listening(port)):
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 404
