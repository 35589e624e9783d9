"""Test helpers for services that use illumichat_authz.

The pytest plugin (installed with the package, ``pytest11`` entry point) provides the
fixtures ``authorizer``, ``authz_facts``, ``authz_settings``, ``authz_api_keys``,
``authz_issuer``, ``mint_session``, ``mint_bearer``, ``mint_api_key`` and ``sign_twilio``.
This package provides the helpers, imported on first use so that the plugin costs nothing
for projects that never call them::

    from illumichat_authz.testing import assert_decision, call_asgi, make_request
    from illumichat_authz.testing.strategies import malformed_credentials, paths

See docs/testing-kit.md.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "FactsBuilder",
    "JwksServer",
    "LocalIssuer",
    "MintedCookie",
    "Response",
    "asgi_scope",
    "assert_decision",
    "build_test_authorizer",
    "call_asgi",
    "call_asgi_sync",
    "call_wsgi",
    "make_request",
    "make_test_settings",
    "observe",
    "serve_asgi",
    "session_cookie",
    "sign_twilio",
    "wsgi_environ",
]

_WHERE = {
    "FactsBuilder": "fixtures",
    "build_test_authorizer": "fixtures",
    "make_test_settings": "fixtures",
    "JwksServer": "minting",
    "LocalIssuer": "minting",
    "MintedCookie": "minting",
    "session_cookie": "minting",
    "sign_twilio": "minting",
    "assert_decision": "assertions",
    "make_request": "assertions",
    "observe": "assertions",
    "Response": "http",
    "asgi_scope": "http",
    "call_asgi": "http",
    "call_asgi_sync": "http",
    "call_wsgi": "http",
    "serve_asgi": "http",
    "wsgi_environ": "http",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
