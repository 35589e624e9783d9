"""Reason codes: the stable, machine-readable half of every decision.

Clients, logs and dashboards key on these strings, so they never change meaning once
released. Each code implies one HTTP status (``STATUS_OF``); the human half is the
decision's ``message``.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["STATUS_OF", "Reason"]


class Reason(StrEnum):
    # 200: allowed.
    ALLOWED = "allowed"
    PUBLIC = "public"
    WEBHOOK_VERIFIED = "webhook_verified"
    PREFLIGHT = "preflight"
    # 400: the request itself is unusable; never classified, never public.
    NON_CANONICAL_PATH = "non_canonical_path"
    BAD_METHOD = "bad_method"
    BAD_HEADER = "bad_header"
    MALFORMED_REQUEST = "malformed_request"
    MISSING_WORKSPACE = "missing_workspace"
    # 401: "log in again".
    AMBIGUOUS_CREDENTIAL = "ambiguous_credential"
    AUTHENTICATION_REQUIRED = "authentication_required"
    INVALID_CREDENTIAL = "invalid_credential"
    INVALID_TOKEN = "invalid_token"
    SESSION_EXPIRED = "session_expired"
    TOKEN_EXPIRED = "token_expired"
    API_KEY_INVALID = "api_key_invalid"
    API_KEY_REVOKED = "api_key_revoked"
    API_KEY_EXPIRED = "api_key_expired"
    UNDECLARED_ROUTE = "undeclared_route"
    # 403: "you may not".
    INVALID_SIGNATURE = "invalid_signature"
    NOT_A_MEMBER = "not_a_member"
    MEMBERSHIP_INACTIVE = "membership_inactive"
    INSUFFICIENT_ROLE = "insufficient_role"
    NOT_VISIBLE = "not_visible"
    SCOPE_NOT_GRANTED = "scope_not_granted"
    WORKSPACE_MISMATCH = "workspace_mismatch"
    POLICY_DENIED = "policy_denied"
    # 404: the resource does not exist (or is concealed).
    NOT_FOUND = "not_found"
    # 413: a webhook body over the configured limit.
    BODY_TOO_LARGE = "body_too_large"
    # 429.
    RATE_LIMITED = "rate_limited"
    # 500 / 503: our fault or a dependency's; never an allow.
    INTERNAL_ERROR = "internal_error"
    AUTH_UNAVAILABLE = "auth_unavailable"
    FACTS_UNAVAILABLE = "facts_unavailable"


_ALLOW = {Reason.ALLOWED, Reason.PUBLIC, Reason.WEBHOOK_VERIFIED, Reason.PREFLIGHT}
_400 = {
    Reason.NON_CANONICAL_PATH,
    Reason.BAD_METHOD,
    Reason.BAD_HEADER,
    Reason.MALFORMED_REQUEST,
    Reason.MISSING_WORKSPACE,
}
_401 = {
    Reason.AMBIGUOUS_CREDENTIAL,
    Reason.AUTHENTICATION_REQUIRED,
    Reason.INVALID_CREDENTIAL,
    Reason.INVALID_TOKEN,
    Reason.SESSION_EXPIRED,
    Reason.TOKEN_EXPIRED,
    Reason.API_KEY_INVALID,
    Reason.API_KEY_REVOKED,
    Reason.API_KEY_EXPIRED,
}

#: The status each reason implies. ``UNDECLARED_ROUTE`` is 401 for anonymous callers and
#: 403 for authenticated ones; ``NOT_VISIBLE`` is 403, or 404 when existence is concealed;
#: the core sets those two explicitly.
STATUS_OF: dict[Reason, int] = {
    **dict.fromkeys(_ALLOW, 200),
    **dict.fromkeys(_400, 400),
    **dict.fromkeys(_401, 401),
    Reason.UNDECLARED_ROUTE: 401,
    Reason.INVALID_SIGNATURE: 403,
    Reason.NOT_A_MEMBER: 403,
    Reason.MEMBERSHIP_INACTIVE: 403,
    Reason.INSUFFICIENT_ROLE: 403,
    Reason.NOT_VISIBLE: 403,
    Reason.SCOPE_NOT_GRANTED: 403,
    Reason.WORKSPACE_MISMATCH: 403,
    Reason.POLICY_DENIED: 403,
    Reason.NOT_FOUND: 404,
    Reason.BODY_TOO_LARGE: 413,
    Reason.RATE_LIMITED: 429,
    Reason.INTERNAL_ERROR: 500,
    Reason.AUTH_UNAVAILABLE: 503,
    Reason.FACTS_UNAVAILABLE: 503,
}
