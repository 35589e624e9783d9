"""Settings: a TOML file, ``ILLUMICHAT_AUTHZ_*`` overrides, and start-up errors that name the key.

"A bad value fails at start-up with ConfigurationError naming the key, never at request
time." Each bad value below is checked for the dotted key in the message, so an operator
can find the line to fix without reading a traceback.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from illumichat_authz import Authorizer, ConfigurationError, Settings, load_settings
from illumichat_authz.config import default_policies_dir
from illumichat_authz.stores.ratelimit import RateLimiter

_LIMITER = RateLimiter()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ILLUMICHAT_AUTHZ_* variable from the host leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("ILLUMICHAT_AUTHZ_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "authz.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_defaults_need_no_file() -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.session.cookie_name == "authjs.session-token"
    assert settings.routes.undeclared == "deny"
    assert settings.decisions.conceal_hidden is False
    assert settings.policies.dir == default_policies_dir()
    assert (settings.policies.dir / settings.policies.routes).is_file()
    assert settings.twilio.max_body_bytes == 64 * 1024


def test_a_toml_file_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [session]
        secrets = ["newest", "older"]
        workspace_claim = "activeWorkspace"

        [twilio]
        auth_tokens = ["tok"]
        algorithm = "sha256"

        [twilio.assistants]
        "a-1" = ["tok-a1"]

        [proxies]
        trusted = ["10.0.0.0/8", "::1/128"]
        """,
    )
    settings = load_settings(path)
    assert settings.session.secrets == ["newest", "older"]
    assert settings.session.workspace_claim == "activeWorkspace"
    assert settings.twilio.algorithm == "sha256"
    assert settings.twilio.assistants == {"a-1": ["tok-a1"]}
    assert settings.proxies.trusted == ["10.0.0.0/8", "::1/128"]


def test_the_environment_overrides_the_file_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        """
        [session]
        secrets = ["from-file"]
        cookie_name = "custom.session"

        [routes]
        undeclared = "deny"
        """,
    )
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_SESSION__SECRETS", '["from-env", "from-env-old"]')
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_ROUTES__UNDECLARED", "authenticated")
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_DECISIONS__CONCEAL_HIDDEN", "true")
    settings = load_settings(path)
    assert settings.session.secrets == ["from-env", "from-env-old"]
    # The rest of the [session] table still comes from the file.
    assert settings.session.cookie_name == "custom.session"
    assert settings.routes.undeclared == "authenticated"
    assert settings.decisions.conceal_hidden is True


def test_the_environment_alone_configures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_TWILIO__AUTH_TOKENS", '["t1"]')
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_ROUTES__MAX_PATH_LENGTH", "512")
    settings = load_settings()
    assert settings.twilio.auth_tokens == ["t1"]
    assert settings.routes.max_path_length == 512


def test_a_bad_environment_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_ROUTES__MAX_PATH_LENGTH", "lots")
    with pytest.raises(ConfigurationError, match=r"routes\.max_path_length"):
        load_settings()


def test_a_file_that_is_not_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[routes]\n# \xff\n")
    with pytest.raises(ConfigurationError, match="not valid UTF-8"):
        load_settings(path)


def test_a_deeply_nested_environment_value_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_PROXIES__TRUSTED", "[" * 100_000)
    with pytest.raises(ConfigurationError):
        load_settings()


def test_a_secret_with_a_lone_surrogate_names_the_key() -> None:
    with pytest.raises(ConfigurationError, match=r"session\.secrets"):
        load_settings(overrides={"session": {"secrets": ["ok-secret", "bad\ud800"]}})


def test_relative_paths_are_resolved_against_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc" / "authz"
    conf_dir.mkdir(parents=True)
    path = write(
        conf_dir,
        """
        [policies]
        dir = "policies"

        [facts]
        file = "../data/facts.json"

        [session]
        database = "sessions.sqlite"

        [api_keys]
        database = "/var/lib/authz/keys.sqlite"
        """,
    )
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    settings = load_settings(path)
    assert settings.policies.dir == (conf_dir / "policies").resolve()
    assert settings.facts.file == (tmp_path / "etc" / "data" / "facts.json").resolve()
    assert settings.session.database == (conf_dir / "sessions.sqlite").resolve()
    assert settings.api_keys.database == Path("/var/lib/authz/keys.sqlite")


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[routes]\nmax_path_length = 5", "routes.max_path_length"),
        ("[routes]\nmax_path_length = 'long'", "routes.max_path_length"),
        ("[routes]\nundeclared = 'allow'", "routes.undeclared"),
        ("[routes]\nallow_preflight = 'sometimes'", "routes.allow_preflight"),
        ("[session]\nsecrets = ['ok', '  ']", "session.secrets"),
        ("[session]\nsecrets = 'not-a-list'", "session.secrets"),
        ("[session]\nclock_tolerance_s = 3600", "session.clock_tolerance_s"),
        ("[session]\nclock_tolerance_s = -1", "session.clock_tolerance_s"),
        ("[auth0]\nalgorithms = ['HS256']", "auth0.algorithms"),
        ("[auth0]\nalgorithms = []", "auth0.algorithms"),
        ("[auth0]\nalgorithms = ['none']", "auth0.algorithms"),
        ("[auth0]\njwks_ttl_s = 0", "auth0.jwks_ttl_s"),
        ("[twilio]\nalgorithm = 'md5'", "twilio.algorithm"),
        ("[twilio]\nmax_body_bytes = 10", "twilio.max_body_bytes"),
        ("[twilio.assistants]\na-1 = 'tok'", "twilio.assistants.a-1"),
        ("[proxies]\ntrusted = ['10.0.0.0/33']", "proxies.trusted"),
        ("[proxies]\ntrusted = ['everyone']", "proxies.trusted"),
        ("[api_keys]\ncache_ttl_s = 1000", "api_keys.cache_ttl_s"),
        ("[decisions]\nconceal_hidden = 'maybe'", "decisions.conceal_hidden"),
        ("policies = 'here'", "policies"),
    ],
)
def test_every_bad_value_names_its_key(tmp_path: Path, toml: str, key: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigurationError) as info:
        load_settings(path)
    message = str(info.value)
    assert key in message, message
    assert str(path) in message
    assert "Traceback" not in message


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[session]\ncookie = 'x'", "session.cookie"),
        ("[routes]\nundeclard = 'deny'", "routes.undeclard"),
        ("[bogus]\nx = 1", "bogus"),
        ("top_level = true", "top_level"),
        ("[twilio]\nauth_token = 'singular'", "twilio.auth_token"),
    ],
)
def test_unknown_keys_are_refused(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(ConfigurationError, match=key.replace(".", r"\.")):
        load_settings(write(tmp_path, toml))


def test_unknown_override_keys_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"session\.secret\b"):
        load_settings(overrides={"session": {"secret": "singular"}})


def test_secrets_are_not_echoed_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "[session]\nsecrets = ['super-secret-value', '']")
    with pytest.raises(ConfigurationError) as info:
        load_settings(path)
    assert "super-secret-value" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://tenant.example.auth0.com/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks.json",
        "http://localhost:9000/jwks",
        "http://[::1]:9000/jwks",
        "http://127.0.0.2:8080/jwks.json",  # all of 127.0.0.0/8 is loopback
    ],
)
def test_jwks_url_https_or_loopback_http(url: str) -> None:
    settings = load_settings(overrides={"auth0": {"jwks_url": url}})
    assert settings.auth0.resolved_jwks_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://tenant.example.auth0.com/.well-known/jwks.json",
        "http://127.0.0.1.evil.example/jwks",
        "http://localhost@evil.example/jwks",
        "http://10.0.0.1/jwks",
        "ftp://127.0.0.1/jwks",
        "file:///etc/jwks.json",
        "jwks.json",
    ],
)
def test_jwks_url_plain_http_is_refused_off_loopback(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"auth0\.jwks_url"):
        load_settings(overrides={"auth0": {"jwks_url": url}})


def test_auth0_domain_gives_issuer_and_jwks_url() -> None:
    auth0 = load_settings(overrides={"auth0": {"domain": "tenant.example"}}).auth0
    assert auth0.issuer == "https://tenant.example/"
    assert auth0.resolved_jwks_url == "https://tenant.example/.well-known/jwks.json"


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_a_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[session\nsecrets = [")
    with pytest.raises(ConfigurationError, match="TOML syntax error") as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(Exception, match="frozen"):
        settings.session.cookie_name = "other"  # type: ignore[misc]


def test_configuration_error_is_a_value_error() -> None:
    assert issubclass(ConfigurationError, ValueError)


def test_start_up_refuses_a_policy_dir_that_does_not_exist(tmp_path: Path) -> None:
    settings = load_settings(overrides={"policies": {"dir": str(tmp_path / "nowhere")}})
    with pytest.raises(ConfigurationError):
        Authorizer.from_settings(settings, rate_limiter=_LIMITER)


def test_start_up_reads_the_facts_file_named_in_the_config(tmp_path: Path) -> None:
    (tmp_path / "facts.json").write_text(
        '{"memberships": [{"user": "u-1", "workspace": "ws-1", "role": "admin"}]}',
        encoding="utf-8",
    )
    path = write(tmp_path, '[facts]\nfile = "facts.json"\n')
    authz = Authorizer.from_settings(load_settings(path), rate_limiter=_LIMITER)
    facts: Any = authz.facts
    membership = facts.membership("u-1", "ws-1")
    assert membership is not None
    assert membership.role == "admin"  # any role the policy names: a plain string


def test_start_up_refuses_a_bad_facts_file(tmp_path: Path) -> None:
    (tmp_path / "facts.json").write_text('{"memberships": [{"user": "u-1"}]}', encoding="utf-8")
    path = write(tmp_path, '[facts]\nfile = "facts.json"\n')
    with pytest.raises(ConfigurationError, match=r"memberships\[0\]\.workspace"):
        Authorizer.from_settings(load_settings(path), rate_limiter=_LIMITER)


@pytest.mark.parametrize("uri", ["carrier-pigeon://", "mongodb://db:27017", "localhost:6379"])
def test_an_unsupported_rate_limit_storage_is_refused_with_the_settings(uri: str) -> None:
    # At settings time, before ``limits`` half-builds a storage (and prints a traceback).
    with pytest.raises(ConfigurationError, match=r"rate_limits\.storage: .*memory://"):
        load_settings(overrides={"rate_limits": {"storage": uri}})


@pytest.mark.parametrize("uri", ["memory://", "redis://localhost:6379/0", "rediss://h:6380"])
def test_a_supported_rate_limit_storage_is_accepted(uri: str) -> None:
    assert load_settings(overrides={"rate_limits": {"storage": uri}}).rate_limits.storage == uri


def test_a_missing_facts_file_or_policy_dir_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"^facts\.file: "):
        Authorizer.from_settings(load_settings(overrides={"facts": {"file": str(tmp_path / "x")}}))
    with pytest.raises(ConfigurationError, match=r"^policies\.dir"):
        Authorizer.from_settings(load_settings(overrides={"policies": {"dir": str(tmp_path)}}))


def test_a_bad_value_from_the_environment_is_blamed_on_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[routes]\nundeclared = "deny"\n', encoding="utf-8")
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_ROUTES__UNDECLARED", "bogus")
    with pytest.raises(ConfigurationError, match=r"ILLUMICHAT_AUTHZ_ROUTES__UNDECLARED"):
        load_settings(path)


def test_environment_false_reads_no_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[session]\nsecrets = ["from-file"]\n')
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_SESSION__SECRETS", '["from-env"]')
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_DECISIONS__CONCEAL_HIDDEN", "true")
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_ROUTES__UNDECLARED", "bogus")  # not even validated
    settings = load_settings(path, overrides={"twilio": {"auth_tokens": ["t"]}}, environment=False)
    assert type(settings) is Settings
    assert settings.session.secrets == ["from-file"]
    assert settings.decisions.conceal_hidden is False
    assert settings.routes.undeclared == "deny"
    assert settings.twilio.auth_tokens == ["t"]
    with pytest.raises(ConfigurationError, match=r"max_path_length") as caught:
        load_settings(overrides={"routes": {"max_path_length": 1}}, environment=False)
    assert "ILLUMICHAT_AUTHZ_" not in str(caught.value)
