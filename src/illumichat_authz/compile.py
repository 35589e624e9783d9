"""The compiler from :class:`Settings` to the frozen :class:`Core`: routes, policy and
credential verifiers, checked at start-up. Outside the core package: it reads files and
settings (pydantic), which no request ever needs."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import Settings
from .core import Authenticators, Core
from .credentials.auth0 import Auth0BearerVerifier
from .credentials.authjs import AuthjsSessionDecoder
from .credentials.twilio import TwilioSignatureVerifier
from .errors import ConfigurationError
from .net import parse_trusted
from .policy import Policy
from .policy_check import require_consistent
from .ratelimit import RateLimitSpec
from .routes import RouteTable, load_routes

#: Held while casbin compiles a policy (``build_core``).
_COMPILING = threading.Lock()

__all__ = ["build_core", "policy_revision", "revision_paths", "setting"]


def build_core(
    settings: Settings, *, routes: RouteTable | None = None, policy: Policy | None = None
) -> Core:
    """Compile the routes, the policy and the credential verifiers; fail fast on mistakes."""
    pol = settings.policies
    with setting(
        "policies.dir / policies.routes" + (" / policies.host_routes" if pol.host_routes else "")
    ):
        routes = routes or load_routes(pol.dir / pol.routes, host_files=pol.host_routes)
    with setting("policies.dir / policies.model / policies.policy"):
        if policy is None:
            # casbin parses its matchers with ``ast`` on every enforce, and CPython 3.11's
            # parser fails when two threads run it at once ("AST constructor recursion
            # depth mismatch"): one policy compiles at a time in a process (two
            # rollouts, a rollout beside a start-up). Never on a request's path.
            with _COMPILING:
                policy = Policy(model_path=pol.dir / pol.model, policy_path=pol.dir / pol.policy)
    require_consistent(policy, routes)
    specs: dict[str, RateLimitSpec] = {}
    for route in routes.routes:
        if route.rate_limit:
            specs[route.id] = RateLimitSpec.parse(
                route.rate_limit,
                when_unavailable="pass" if route.rate_limit_unavailable == "pass" else "refuse",
            )
    twilio_cfg = settings.twilio
    twilio = (
        TwilioSignatureVerifier.from_settings(twilio_cfg)
        if twilio_cfg.auth_tokens or twilio_cfg.assistants
        else None
    )
    session_cfg = settings.session
    authenticators = Authenticators(
        session=AuthjsSessionDecoder.from_settings(session_cfg)
        if session_cfg.secrets or session_cfg.database
        else None,
        session_database=session_cfg.database is not None or session_cfg.database_sessions,
        auth0=Auth0BearerVerifier.from_settings(settings.auth0) if settings.auth0.domain else None,
        # API keys in their SQLite file, or in [database] with the facts.
        api_keys=settings.api_keys.database is not None or settings.database.url is not None,
    )
    return Core(
        routes=routes,
        policy=policy,
        authenticators=authenticators,
        twilio=twilio,
        trusted_proxies=parse_trusted(settings.proxies.trusted),
        forwarded_prefix=settings.proxies.forwarded_prefix,
        public_base_url=twilio_cfg.public_base_url,
        undeclared=settings.routes.undeclared,
        allow_preflight=settings.routes.allow_preflight,
        conceal_hidden=settings.decisions.conceal_hidden,
        max_path_length=settings.routes.max_path_length,
        check_app=settings.routes.check_app,
        max_body_bytes=twilio_cfg.max_body_bytes,
        rate_limits=specs,
        policy_revision=policy_revision(revision_paths(settings, pol.dir)),
    )


def revision_paths(settings: Settings, directory: Path) -> list[Path]:
    """The files whose bytes make a policy's revision: the model, the rules and the
    routes in ``directory``, then the host's own route files."""
    pol = settings.policies
    return [directory / pol.model, directory / pol.policy, directory / pol.routes, *pol.host_routes]


def policy_revision(paths: list[Any]) -> str:
    """The digest of the policy files' bytes, in order ("" if one cannot be read)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            return ""
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def setting(key: str) -> Iterator[None]:
    """Name the setting behind a file that cannot be loaded (``facts.file: ...``)."""
    try:
        yield
    except ConfigurationError as exc:
        raise ConfigurationError(f"{key}: {exc}") from None
