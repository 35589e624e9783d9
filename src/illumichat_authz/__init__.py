"""illumichat_authz: authentication and authorization for IllumiChat services.

The core is sans-IO (``illumichat_authz.core``: request facts and lookups in, a
``Decision`` out); the ``Authorizer`` drives it for sync and async hosts;
``integrations`` adapt it to ASGI, WSGI, FastAPI/Starlette, Flask and Django;
``testing`` helps other services' tests.
"""

from __future__ import annotations

from .authorizer import Authorizer
from .compile import build_core
from .config import Settings, load_settings
from .core import Core
from .decision import Decision, ResourceRef
from .errors import (
    AuthzError,
    BadRequestError,
    ConfigurationError,
    CredentialError,
    DependencyUnavailableError,
    PermissionDeniedError,
    SignatureError,
)
from .facts import (
    Assistant,
    AsyncFacts,
    Chat,
    Facts,
    Grant,
    InMemoryFacts,
    Membership,
    Resource,
)
from .facts_file import load_facts_file
from .principal import CredentialKind, Principal
from .reasons import STATUS_OF, Reason
from .render import render_denial
from .request import RequestFacts
from .vocab import Role, Visibility

__version__ = "0.1.0"

__all__ = [
    "STATUS_OF",
    "Assistant",
    "AsyncFacts",
    "Authorizer",
    "AuthzError",
    "BadRequestError",
    "Chat",
    "ConfigurationError",
    "Core",
    "CredentialError",
    "CredentialKind",
    "Decision",
    "DependencyUnavailableError",
    "Facts",
    "Grant",
    "InMemoryFacts",
    "Membership",
    "PermissionDeniedError",
    "Principal",
    "Reason",
    "RequestFacts",
    "Resource",
    "ResourceRef",
    "Role",
    "Settings",
    "SignatureError",
    "Visibility",
    "__version__",
    "build_core",
    "load_facts_file",
    "load_settings",
    "render_denial",
]
