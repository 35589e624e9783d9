"""The test kit never reads the environment: a service's tests decide the same in any shell.

A throwaway project with its own tests on the kit's fixtures runs in a subprocess (a bare
pytest configuration, the plugin found through its ``pytest11`` entry point), once in a
clean environment and once with hostile ``ILLUMICHAT_AUTHZ_*`` variables: a production
session secret, ``conceal_hidden``, another policies directory, undeclared routes let
through, production Twilio tokens and Auth0 tenant. Both runs pass the same assertions and
report the same settings and decisions; the minted cookie opens only with the kit secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import illumichat_authz
from illumichat_authz.config import load_settings

HOSTILE = {
    "ILLUMICHAT_AUTHZ_SESSION__SECRETS": '["production-session-secret-do-not-mint-with-me"]',
    "ILLUMICHAT_AUTHZ_SESSION__COOKIE_NAME": "__Secure-authjs.session-token",
    "ILLUMICHAT_AUTHZ_SESSION__WORKSPACE_CLAIM": "org",
    "ILLUMICHAT_AUTHZ_SESSION__DATABASE": "/nonexistent/production/sessions.sqlite",
    "ILLUMICHAT_AUTHZ_SESSION__ACCEPT_NEXTAUTH_V4": "true",
    "ILLUMICHAT_AUTHZ_DECISIONS__CONCEAL_HIDDEN": "true",
    "ILLUMICHAT_AUTHZ_ROUTES__UNDECLARED": "authenticated",
    "ILLUMICHAT_AUTHZ_ROUTES__MAX_PATH_LENGTH": "16",
    "ILLUMICHAT_AUTHZ_ROUTES__ALLOW_PREFLIGHT": "false",
    "ILLUMICHAT_AUTHZ_POLICIES__DIR": "/nonexistent/production/policies",
    "ILLUMICHAT_AUTHZ_TWILIO__AUTH_TOKENS": '["production-twilio-token"]',
    "ILLUMICHAT_AUTHZ_TWILIO__PUBLIC_BASE_URL": "https://api.production.example",
    "ILLUMICHAT_AUTHZ_TWILIO__ALGORITHM": "sha256",
    "ILLUMICHAT_AUTHZ_AUTH0__DOMAIN": "production.eu.auth0.com",
    "ILLUMICHAT_AUTHZ_AUTH0__AUDIENCE": "https://api.production.example",
    "ILLUMICHAT_AUTHZ_AUTH0__JWKS_URL": "https://production.eu.auth0.com/.well-known/jwks.json",
    "ILLUMICHAT_AUTHZ_AUTH0__WORKSPACE_CLAIM": "https://production.example/org",
    "ILLUMICHAT_AUTHZ_API_KEYS__DATABASE": "/nonexistent/production/keys.sqlite",
    "ILLUMICHAT_AUTHZ_FACTS__FILE": "/nonexistent/production/facts.json",
    "ILLUMICHAT_AUTHZ_PROXIES__TRUSTED": '["0.0.0.0/0"]',
    "ILLUMICHAT_AUTHZ_RATE_LIMITS__STORAGE": "redis://127.0.0.1:1",
}

# The service's own tests: plain fixtures from the kit, nothing of ours imported but the
# documented helpers. Each writes what it saw to report-<name>.json for the comparison.
SERVICE_TESTS = """
import json
import time
from pathlib import Path
from urllib.parse import urlencode

from illumichat_authz.config import SessionSettings
from illumichat_authz.credentials.authjs import AuthjsSessionDecoder
from illumichat_authz.errors import CredentialError
from illumichat_authz.testing import make_request
from illumichat_authz.testing.fixtures import DEV_SESSION_SECRET, TWILIO_AUTH_TOKEN

PRODUCTION_SECRET = "production-session-secret-do-not-mint-with-me"


def report(name, value):
    Path(f"report-{name}.json").write_text(json.dumps(value, sort_keys=True, default=str))


def opens_with(secret, cookie):
    decoder = AuthjsSessionDecoder.from_settings(SessionSettings(secrets=[secret]))
    found = decoder.find_cookie([cookie])
    if found is None:
        return False
    try:
        decoder.decode(found, now=time.time())
    except CredentialError:
        return False
    return True


def test_minted_cookie_opens_only_with_the_kit_secret(mint_session, authz_settings):
    cookie = mint_session("bob", workspace="w1")
    assert cookie.startswith("authjs.session-token=")
    assert opens_with(DEV_SESSION_SECRET, cookie)
    assert not opens_with(PRODUCTION_SECRET, cookie)
    assert authz_settings.session.secrets == [DEV_SESSION_SECRET]


def test_decisions(authz_facts, authorizer, mint_session, mint_bearer, mint_api_key,
                   sign_twilio, assert_decision):
    (
        authz_facts.workspace("w1")
        .member("alice", role="admin")
        .member("bob")
        .assistant("a-pub", visibility="public", creator="alice")
        .assistant("a-priv", visibility="private", creator="alice")
    )
    bob = mint_session("bob", workspace="w1")
    url = "https://api.illumichat.test/api/sms/webhook/a-pub"
    form = {"Body": "hi", "From": "+15550100"}
    requests = {
        "own": make_request("GET", "/api/assistants/a-pub", cookie=bob),
        "hidden": make_request("GET", "/api/assistants/a-priv", cookie=bob),
        "undeclared": make_request("GET", "/api/not-in-the-table", cookie=bob),
        "long_path": make_request("GET", "/api/assistants/a-pub", cookie=bob),
        "preflight": make_request(
            "OPTIONS", "/api/assistants", headers={"access-control-request-method": "GET"}
        ),
        "bearer": make_request(
            "GET", "/api/assistants/a-pub", bearer=mint_bearer("bob", workspace="w1")
        ),
        "api_key": make_request(
            "GET", "/api/assistants/a-pub", bearer=mint_api_key("bob", "w1")
        ),
        "twilio": make_request(
            "POST", "/api/sms/webhook/a-pub",
            headers={"content-type": "application/x-www-form-urlencoded",
                     "x-twilio-signature": sign_twilio(url, form)},
            body=urlencode(form).encode(),
        ),
        "twilio_kit_token": make_request(
            "POST", "/api/sms/webhook/a-pub",
            headers={"content-type": "application/x-www-form-urlencoded",
                     "x-twilio-signature": sign_twilio(url, form, token=TWILIO_AUTH_TOKEN)},
            body=urlencode(form).encode(),
        ),
    }
    seen = {}
    for name, request in requests.items():
        decision = authorizer.decide(request)
        seen[name] = [decision.status, decision.reason.value]
    report("decisions", seen)
    assert seen == {
        "own": [200, "allowed"],
        "hidden": [403, "not_visible"],
        "undeclared": [403, "undeclared_route"],
        "long_path": [200, "allowed"],
        "preflight": [200, "preflight"],
        "bearer": [200, "allowed"],
        "api_key": [200, "allowed"],
        "twilio": [200, "webhook_verified"],
        "twilio_kit_token": [200, "webhook_verified"],
    }
    assert_decision(requests["hidden"], 403, "not_visible")


def test_settings(authz_settings):
    settings = authz_settings.model_dump(mode="json")
    settings["auth0"]["jwks_url"] = "(the kit's loopback JWKS server)"
    report("settings", settings)
"""


def run_service_tests(project: Path, extra_env: dict[str, str]) -> dict[str, Any]:
    """Run the service's tests in ``project``; return the reports they wrote."""
    project.mkdir()
    (project / "test_service.py").write_text(SERVICE_TESTS, encoding="utf-8")
    ini = project / "pytest.ini"
    ini.write_text("[pytest]\naddopts = --strict-markers -p no:cacheprovider\n")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ILLUMICHAT_AUTHZ_")}
    # This checkout's package first (an absolute path: the run's cwd is the project).
    env["PYTHONPATH"] = str(Path(illumichat_authz.__file__).resolve().parents[1])
    env.update(extra_env)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(project), "-q"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout, result.stdout[-2000:]
    return {
        p.stem.removeprefix("report-"): json.loads(p.read_text())
        for p in project.glob("report-*.json")
    }


def test_hostile_environment_changes_nothing(tmp_path: Path) -> None:
    clean = run_service_tests(tmp_path / "clean", {})
    hostile = run_service_tests(tmp_path / "hostile", HOSTILE)
    assert set(clean) == {"decisions", "settings"}
    assert hostile == clean


def test_the_hostile_variables_are_ones_the_library_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guards the test above: each variable really changes what load_settings builds."""
    for name in list(os.environ):
        if name.upper().startswith("ILLUMICHAT_AUTHZ_"):
            monkeypatch.delenv(name)
    baseline = load_settings(environment=False).model_dump(mode="json")
    for name, value in HOSTILE.items():
        with monkeypatch.context() as patched:
            patched.setenv(name, value)
            assert load_settings().model_dump(mode="json") != baseline, name
