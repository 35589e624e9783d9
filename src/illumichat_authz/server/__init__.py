"""The forward-auth server (``illumichat-authz serve``): nginx/Traefik/Envoy and AuthZEN.

Needs the ``server`` extra (Starlette and uvicorn)::

    pip install "illumichat-authz[server]"

See docs/forward-auth.md.
"""

from __future__ import annotations

try:
    from .app import AUTH_PREFIX, create_app, forwarded_request
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name is not None and exc.name.split(".")[0] in {"starlette", "uvicorn"}:
        raise ImportError(
            "illumichat_authz.server needs Starlette; install it with: "
            'pip install "illumichat-authz[server]"'
        ) from exc
    raise

__all__ = ["AUTH_PREFIX", "create_app", "forwarded_request"]
