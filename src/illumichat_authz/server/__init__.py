"""The forward-auth server (``illumichat-authz serve``): nginx/Traefik/Envoy and AuthZEN.

Needs the ``server`` extra (Starlette and uvicorn)::

    pip install "illumichat-authz[server]"

``uvicorn --factory illumichat_authz.server:create_app_from_env`` runs it configured by
the environment (:mod:`illumichat_authz.server.factory`). See docs/forward-auth.md.
"""

from __future__ import annotations

try:
    from .app import AUTH_PREFIX, create_app, forwarded_request
    from .factory import create_app_from_env
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name is not None and exc.name.split(".")[0] in {"starlette", "uvicorn"}:
        raise ImportError(
            "illumichat_authz.server needs Starlette; install it with: "
            'pip install "illumichat-authz[server]"'
        ) from exc
    raise

__all__ = ["AUTH_PREFIX", "create_app", "create_app_from_env", "forwarded_request"]
