"""Settings: one TOML file plus ``ILLUMICHAT_AUTHZ_*`` environment variables.

Environment variables override the file; nested keys use ``__`` (for example
``ILLUMICHAT_AUTHZ_SESSION__SECRETS='["s2", "s1"]'``). A bad value fails at start-up with
:class:`ConfigurationError` naming the key, never at request time. Relative paths are
resolved against the configuration file's directory.

``load_settings(..., environment=False)`` reads no variable at all (the test kit builds its
settings that way). Note that pydantic-settings reads the environment in *every* way a
:class:`Settings` is validated, ``Settings(...)`` and ``Settings.model_validate(...)`` alike.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from .credentials._util import DEFAULT_CLOCK_TOLERANCE_S, MAX_CLOCK_TOLERANCE_S
from .credentials.jwk import SUPPORTED_ALGORITHMS
from .errors import ConfigurationError
from .net import is_loopback_host
from .ratelimit import check_storage_uri

__all__ = [
    "ApiKeySettings",
    "Auth0Settings",
    "DatabaseSettings",
    "DecisionLogSettings",
    "DecisionSettings",
    "FactsSettings",
    "PoliciesSettings",
    "ProxySettings",
    "RateLimitSettings",
    "RouteSettings",
    "SessionSettings",
    "Settings",
    "TwilioSettings",
    "default_policies_dir",
    "load_settings",
]

_ENV_PREFIX = "ILLUMICHAT_AUTHZ_"
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?\Z")


def default_policies_dir() -> Path:
    """The IllumiChat policy shipped with the package (the repository's ``policies/``)."""
    return (Path(__file__).parent / "_default_policies").resolve()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoliciesSettings(_Section):
    dir: Path = Field(default_factory=default_policies_dir)
    model: str = "model.conf"
    policy: str = "policy.csv"
    routes: str = "routes.toml"
    #: The host app's own route files (docs, health checks, static files), layered over
    #: ``routes``: same format, relative to the configuration file; a route declared twice
    #: is a start-up error.
    host_routes: list[Path] = Field(default_factory=list)
    #: Where the live policy comes from: these files, or the versions ``policy publish``
    #: stores in ``[database]`` (``policies.dir`` then only seeds an empty database).
    source: Literal["files", "database"] = "files"
    #: Files: pick up a change of the policy files without a restart (checked, then
    #: swapped; a candidate that fails its checks is refused and the last good one stays).
    watch: bool = False
    #: How often watched files are looked at, and database versions re-read (a backstop
    #: for the change feed's notification).
    watch_interval_s: float = Field(default=1.0, gt=0, le=3600)
    #: Files: a candidate policy directory evaluated beside the live one on real traffic,
    #: every would-be difference logged, nothing enforced (``policy shadow`` for versions).
    shadow_dir: Path | None = None


class FactsSettings(_Section):
    #: A JSON facts file; ``None`` means an empty in-memory store (everything in a
    #: workspace is then 403 ``not_a_member``).
    file: Path | None = None


class RouteSettings(_Section):
    #: ``deny``: an undeclared route is 401 anonymous / 403 authenticated.
    #: ``authenticated``: any authenticated caller may use undeclared routes.
    undeclared: Literal["deny", "authenticated"] = "deny"
    #: CORS preflights (OPTIONS with Access-Control-Request-Method) pass unauthenticated.
    allow_preflight: bool = True
    #: Longest raw path accepted; longer is 400 ``non_canonical_path``.
    max_path_length: int = Field(default=2048, ge=16, le=65536)
    #: At start-up, the adapters compare the framework's routes with the table: framework
    #: routes the table does not classify, and ``require(action)`` that disagrees with it.
    #: ``warn`` logs them, ``error`` refuses to start, ``off`` does not look.
    check_app: Literal["warn", "error", "off"] = "warn"


class DecisionSettings(_Section):
    #: Answer 404 instead of 403 for resources the caller may not see.
    conceal_hidden: bool = False


class SessionSettings(_Section):
    #: Auth.js ``AUTH_SECRET`` values, newest first. Empty: session cookies are not accepted.
    secrets: list[str] = Field(default_factory=list)
    cookie_name: str = "authjs.session-token"
    user_id_claim: str = "sub"
    workspace_claim: str | None = None
    email_claim: str = "email"
    name_claim: str = "name"
    clock_tolerance_s: float = Field(
        default=DEFAULT_CLOCK_TOLERANCE_S, ge=0, le=MAX_CLOCK_TOLERANCE_S
    )
    #: Auth.js database strategy: a SQLite file with the adapter's ``sessions`` table.
    database: Path | None = None
    #: Accept NextAuth v4 cookies (``next-auth.session-token``, A256GCM, empty salt).
    accept_nextauth_v4: bool = False
    #: Auth.js database strategy in ``[database] url``: the adapter's ``sessions`` table
    #: (``@auth/pg-adapter`` on PostgreSQL).
    database_sessions: bool = False

    @field_validator("secrets")
    @classmethod
    def _secrets_not_blank(cls, value: list[str]) -> list[str]:
        if any(not s.strip() for s in value):
            raise ValueError("secrets must not contain empty strings")
        for secret in value:
            try:
                secret.encode("utf-8")  # the key derivation hashes the UTF-8 bytes
            except UnicodeEncodeError:
                raise ValueError(
                    "secrets must be valid Unicode text (no lone surrogates)"
                ) from None
        return value


class Auth0Settings(_Section):
    domain: str | None = None
    audience: str | None = None
    jwks_url: str | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"])
    user_id_claim: str = "sub"
    workspace_claim: str | None = None
    clock_tolerance_s: float = Field(
        default=DEFAULT_CLOCK_TOLERANCE_S, ge=0, le=MAX_CLOCK_TOLERANCE_S
    )
    #: Shortest interval between two JWKS fetches (an unknown ``kid`` cannot force more).
    jwks_min_refresh_s: float = Field(default=60.0, ge=0)
    #: How long fetched keys are fresh, and how long stale keys serve during an outage.
    jwks_ttl_s: float = Field(default=600.0, gt=0)
    jwks_max_stale_s: float = Field(default=86400.0, ge=0)
    #: Client ids (``azp``) whose tokens are accepted; unset: any client of the tenant.
    authorized_parties: list[str] | None = None

    @field_validator("domain")
    @classmethod
    def _bare_host(cls, value: str | None) -> str | None:
        # The issuer is built as https://{domain}/: a scheme or a slash here would make
        # every token fail (https://https://...), so refuse it at start-up instead.
        if value is not None and not _DOMAIN.match(value):
            raise ValueError("domain must be a bare host name such as 'tenant.eu.auth0.com'")
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a not in SUPPORTED_ALGORITHMS]
        if bad or not value:
            raise ValueError(
                f"algorithms must be a non-empty subset of {sorted(SUPPORTED_ALGORITHMS)}"
            )
        return value

    @property
    def issuer(self) -> str | None:
        return f"https://{self.domain}/" if self.domain else None

    @property
    def resolved_jwks_url(self) -> str | None:
        if self.jwks_url:
            return self.jwks_url
        return f"https://{self.domain}/.well-known/jwks.json" if self.domain else None

    @field_validator("jwks_url")
    @classmethod
    def _https_unless_loopback(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme == "https":
            return value
        if parts.scheme == "http" and is_loopback_host(parts.hostname or ""):
            return value
        raise ValueError("jwks_url must be https (plain http only for loopback hosts)")


class ApiKeySettings(_Section):
    #: SQLite file holding API key records (hashes only). ``None``: API keys disabled.
    database: Path | None = None
    #: How long a verified key may be served from cache before the store is asked again
    #: (bounds how late a revocation takes effect).
    cache_ttl_s: float = Field(default=5.0, ge=0, le=300)


class TwilioSettings(_Section):
    #: Default auth tokens, newest first.
    auth_tokens: list[str] = Field(default_factory=list)
    #: Per-assistant tokens: ``[twilio.assistants] <assistantId> = ["token", ...]``.
    assistants: dict[str, list[str]] = Field(default_factory=dict)
    #: The public base URL Twilio calls (``https://api.example.com``); ``None``: rebuild it
    #: from the request (Host, and X-Forwarded-* from trusted proxies).
    public_base_url: str | None = None
    algorithm: Literal["sha1", "sha256"] = "sha1"
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)


class RateLimitSettings(_Section):
    #: ``memory://`` (per process), or Redis to share counters across instances:
    #: ``redis://``, ``rediss://``, ``redis+unix://``, ``redis+sentinel://``, ``redis+cluster://``.
    storage: str = "memory://"
    strategy: Literal["moving-window", "fixed-window"] = "moving-window"
    #: Bound on each Redis connect and command: past it the hit is a 503 (or passes, on a
    #: route with ``rate_limit_unavailable = "pass"``).
    timeout_s: float = Field(default=0.5, gt=0, le=30)

    @field_validator("storage")
    @classmethod
    def _supported(cls, value: str) -> str:
        return check_storage_uri(value)


class DecisionLogSettings(_Section):
    """``[decision_log]`` (docs/decision-log.md): off until a sink is named."""

    #: ``"logging"`` (``illumichat_authz.decisions``, INFO), ``"stdout"`` (NDJSON),
    #: ``"file:PATH"`` (NDJSON appended), ``"database"`` (``[database] url``'s table).
    sinks: list[str] = Field(default_factory=list)
    #: Allows to log besides every deny: ``"none"``, ``"all"``, or a fraction sampled.
    allows: Literal["none", "all"] | float = "none"
    #: Events held for the writer at most; beyond, an event is dropped and counted.
    queue_size: int = Field(default=100_000, ge=100, le=10_000_000)

    @field_validator("sinks")
    @classmethod
    def _sinks(cls, value: list[str]) -> list[str]:
        for sink in value:
            if sink not in ("logging", "stdout", "database") and not (
                sink.startswith("file:") and len(sink) > len("file:")
            ):
                raise ValueError(
                    f"{sink!r} is not a sink: use 'logging', 'stdout', 'file:PATH' or 'database'"
                )
        if len(set(value)) != len(value):
            raise ValueError("a sink is named twice")
        return value

    @field_validator("allows")
    @classmethod
    def _fraction(cls, value: str | float) -> str | float:
        if isinstance(value, float) and not 0.0 <= value <= 1.0:
            raise ValueError("allows must be 'none', 'all' or a fraction between 0 and 1")
        return value

    @property
    def allow_rate(self) -> float:
        if self.allows == "none":
            return 0.0
        if self.allows == "all":
            return 1.0
        return float(self.allows)


class TelemetrySettings(_Section):
    """``[telemetry]`` (docs/observability.md): each part needs its extra installed."""

    #: Count decisions for Prometheus (the ``metrics`` extra); ``serve`` answers ``/metrics``.
    metrics: bool = False
    #: A span per decision through the OpenTelemetry API (the ``otel`` extra), and the
    #: current trace's id in the decision log. The host configures the SDK and exporter.
    traces: bool = False


class ProxySettings(_Section):
    #: CIDRs whose X-Forwarded-For / X-Forwarded-Proto / X-Forwarded-Host are believed.
    trusted: list[str] = Field(default_factory=list)
    #: Forward auth: decide the URI below a trusted proxy's X-Forwarded-Prefix (off: a
    #: request carrying one is refused). The proxy must set it on every auth request.
    forwarded_prefix: bool = False

    @field_validator("trusted")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR") from exc
        return value


_SQL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(?:\.[A-Za-z_][A-Za-z0-9_]{0,62})?\Z")


class _TableMap(_Section):
    """A host's own table: its name (``schema.table`` allowed) and the columns we read."""

    table: str

    @field_validator("*")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not _SQL_NAME.match(value):
            raise ValueError(f"{value!r} is not a plain SQL identifier (letters, digits, _)")
        return value


class MembershipTable(_TableMap):
    user: str
    workspace: str
    role: str
    #: Unset: the table has no status column (every row is an active membership).
    status: str | None = None


class ResourceTable(_TableMap):
    id: str
    workspace: str
    visibility: str | None = None
    creator: str | None = None
    #: A chat's assistant.
    parent: str | None = None


class GrantTable(_TableMap):
    user: str
    id: str


class TableMappings(_Section):
    """Read these facts from the host's own tables instead of ours (docs/fleet.md)."""

    memberships: MembershipTable | None = None
    #: By resource kind: ``[database.tables.resources.assistant]``.
    resources: dict[str, ResourceTable] = Field(default_factory=dict)
    #: By resource kind: ``[database.tables.grants.assistant]``.
    grants: dict[str, GrantTable] = Field(default_factory=dict)

    @field_validator("resources", "grants")
    @classmethod
    def _kinds(cls, value: dict[str, Any]) -> dict[str, Any]:
        for kind in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", kind):
                raise ValueError(f"{kind!r} is not a resource kind (lower-case letters, _, digits)")
        return value


class DatabaseSettings(_Section):
    #: ``postgresql+psycopg://user:password@host/db`` or ``sqlite:///facts.db`` (relative to
    #: the configuration file). Unset: no database (facts from ``[facts] file``).
    url: str | None = Field(default=None, repr=False)
    #: Longest time a cached fact is served without the change feed confirming it current;
    #: past it, every lookup reads the database (and is a 503 while it is down).
    max_staleness_s: float = Field(default=5.0, gt=0, le=300)
    #: How often the feed reads the revision (the backstop for lost notifications).
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    #: Cached facts per process (memberships, resources and grants together).
    cache_entries: int = Field(default=100_000, ge=0, le=10_000_000)
    #: LISTEN for change notifications (PostgreSQL); off: the poll alone.
    listen: bool = True
    tables: TableMappings = Field(default_factory=TableMappings)

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.partition("://")[0]
        if scheme not in ("sqlite", "postgresql+psycopg", "postgresql+asyncpg", "postgresql"):
            raise ValueError(
                "url must be postgresql+psycopg://... (or postgresql+asyncpg://) or sqlite:///PATH"
            )
        if scheme == "postgresql":
            value = "postgresql+psycopg" + value[len(scheme) :]
        return value


class Settings(BaseSettings):
    """All settings. Build with :func:`load_settings`; the sections are frozen."""

    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    policies: PoliciesSettings = Field(default_factory=PoliciesSettings)
    facts: FactsSettings = Field(default_factory=FactsSettings)
    routes: RouteSettings = Field(default_factory=RouteSettings)
    decisions: DecisionSettings = Field(default_factory=DecisionSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)
    auth0: Auth0Settings = Field(default_factory=Auth0Settings)
    api_keys: ApiKeySettings = Field(default_factory=ApiKeySettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    decision_log: DecisionLogSettings = Field(default_factory=DecisionLogSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    proxies: ProxySettings = Field(default_factory=ProxySettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first (it overrides), then the file's values passed as init kwargs.
        return (env_settings, init_settings)


class _GivenValuesOnly(Settings):
    """Validates the values given and nothing else: no environment, no dotenv, no secrets
    directory (``load_settings(environment=False)``)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _validate(data: dict[str, Any], *, environment: bool) -> Settings:
    if environment:
        return Settings(**data)
    given = _GivenValuesOnly(**data)
    # Handed back as a plain Settings (already validated, so constructing reads nothing).
    return Settings.model_construct(_fields_set=given.model_fields_set, **dict(given))


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make file paths in the TOML relative to the file that names them."""
    for section, key in (
        ("policies", "dir"),
        ("policies", "shadow_dir"),
        ("facts", "file"),
        ("session", "database"),
        ("api_keys", "database"),
    ):
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).is_absolute():
            data[section][key] = str((base / value).resolve())
    database = data.get("database")
    url = database.get("url") if isinstance(database, dict) else None
    if isinstance(url, str) and url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not Path(path).is_absolute() and not path.startswith(":memory:"):
            database["url"] = "sqlite:///" + str((base / path).resolve())  # type: ignore[index]
    policies = data.get("policies")
    hosts = policies.get("host_routes") if isinstance(policies, dict) else None
    if isinstance(hosts, list):
        policies["host_routes"] = [  # type: ignore[index]
            str((base / v).resolve()) if isinstance(v, str) and not Path(v).is_absolute() else v
            for v in hosts
        ]
    return data


def _describe(exc: ValidationError, source: str, *, environment: bool) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        # The environment overrides the file key by key: say where a bad value came from.
        env = _ENV_PREFIX + "__".join(str(p) for p in err["loc"][:2]).upper()
        origin = f" (from {env})" if environment and err["loc"] and env in os.environ else ""
        lines.append(f"  {key}{origin}: {err['msg']}")
    return "\n".join(lines)


def load_settings(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environment: bool = True,
) -> Settings:
    """Read ``path`` (TOML) and the environment into :class:`Settings`.

    ``overrides`` (``{section: {key: value}}``) update the file's sections; the environment
    still overrides both. ``environment=False`` reads no ``ILLUMICHAT_AUTHZ_*`` variable:
    the settings are the defaults, the file and ``overrides``, nothing else (for tests,
    whose decisions and minted credentials must not depend on the shell they run in).

    Raises :class:`ConfigurationError` naming the file and the key at fault.
    """
    data: dict[str, Any] = {}
    source = "environment" if environment else "the given values"
    if path is not None:
        file = Path(path)
        source = str(file)
        try:
            with file.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigurationError(f"configuration file not found: {file}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{file}: TOML syntax error: {exc}") from exc
        except UnicodeDecodeError:
            raise ConfigurationError(f"{file}: not valid UTF-8 (TOML files are UTF-8)") from None
        except OSError as exc:
            raise ConfigurationError(f"{file}: cannot read: {exc.strerror}") from exc
        data = _resolve_paths(data, file.parent.resolve())
    if overrides:
        for section, values in overrides.items():
            data.setdefault(section, {}).update(values)
    try:
        return _validate(data, environment=environment)
    except RecursionError:
        raise ConfigurationError(
            f"invalid configuration in {source}: a value is nested too deeply"
        ) from None
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc, source, environment=environment)) from None
    except SettingsError as exc:
        # e.g. a list-valued environment variable that is not JSON
        cause = exc.__cause__ or exc
        raise ConfigurationError(
            f"invalid configuration in the environment: {exc} ({cause}); "
            "lists and tables must be JSON, e.g. '[\"10.0.0.0/8\"]'"
        ) from None
