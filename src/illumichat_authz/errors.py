"""The exception tree. Every error knows the HTTP status and reason code it implies.

::

    AuthzError                      (never raised itself)
    ├── BadRequestError             400  the request is malformed (path, header, method)
    ├── CredentialError             401  a credential is missing, malformed, expired, revoked
    ├── SignatureError              403  a webhook signature is missing or wrong
    ├── PermissionDeniedError       403  authenticated, but the policy says no
    ├── DependencyUnavailableError  503  a key set, store or facts backend is unreachable
    └── ConfigurationError          (also a ValueError) raised at start-up, never per request

Credential parsers raise these; the decision core turns them into a deny. Messages are
written for the caller and never contain secrets or token bytes.
"""

from __future__ import annotations

from .reasons import STATUS_OF, Reason

__all__ = [
    "AuthzError",
    "BadRequestError",
    "ConfigurationError",
    "CredentialError",
    "DependencyUnavailableError",
    "PermissionDeniedError",
    "SignatureError",
]


class AuthzError(Exception):
    """Base of the request-time errors: carries a reason code and its status."""

    default_reason: Reason = Reason.INTERNAL_ERROR

    def __init__(self, message: str, *, reason: Reason | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason

    @property
    def status(self) -> int:
        return STATUS_OF[self.reason]


class BadRequestError(AuthzError):
    default_reason = Reason.BAD_HEADER


class CredentialError(AuthzError):
    default_reason = Reason.INVALID_CREDENTIAL

    def __init__(
        self, message: str, *, reason: Reason | None = None, token_error: bool = True
    ) -> None:
        super().__init__(message, reason=reason)
        #: RFC 6750 §3.1: whether the challenge carries ``error="invalid_token"``. Not
        #: for a scheme we do not support: "the resource server SHOULD NOT include an
        #: error code or other error information" when the request lacks our credential.
        self.token_error = token_error


class SignatureError(AuthzError):
    default_reason = Reason.INVALID_SIGNATURE


class PermissionDeniedError(AuthzError):
    default_reason = Reason.POLICY_DENIED


class DependencyUnavailableError(AuthzError):
    default_reason = Reason.AUTH_UNAVAILABLE


class ConfigurationError(ValueError):
    """A bad configuration or policy file, raised at start-up; names the key or file:line."""
