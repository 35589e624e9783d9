"""The OpenID AuthZEN Authorization API 1.0 access evaluation endpoints, framework-free.

``POST /access/v1/evaluation`` takes ``{subject, action, resource, context}`` and answers
``{"decision": bool, "context": {...}}``. ``POST /access/v1/evaluations`` takes the same
four members at the top level as defaults plus an ``evaluations`` array whose items
override them: the spec says "the top-level subject, action, resource and context ... act
as default values for each evaluation", and an item's member replaces the default whole.
``options.evaluations_semantic`` is ``execute_all`` (the default), ``deny_on_first_deny``
or ``permit_on_first_permit``; with the latter two the answer stops at the deciding item.
"If the evaluations array is not present or empty, the request behaves like a single
evaluation request" and is answered as one.

Mapping onto IllumiChat: the subject is a user (``type: "user"``) whom the calling
enforcement point has already authenticated (the endpoint itself is protected by a bearer
token); ``subject.properties.workspace`` is their active workspace and
``subject.properties.scopes`` narrows what they may do, like an API key's scopes. The
action is a policy action (``assistant:read``). The resource type is ``assistant``,
``chat``, ``workspace`` or ``member``; ``resource.properties.workspace`` or
``context.workspace`` names the workspace for member resources and workspace-wide actions.
Every decision goes through ``Authorizer.adecide_access``: the same rules as HTTP requests.

``GET /.well-known/authzen-configuration`` is the PDP metadata (the spec's "Policy Decision
Point Metadata"): the PDP identifier and the two evaluation endpoints as absolute URLs. The
search endpoints are not implemented, so the document leaves them out, which is how a PDP
says so.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from ..authorizer import Authorizer
from ..decision import Decision
from ..errors import ConfigurationError
from ..principal import CredentialKind, Principal
from ..reasons import Reason

__all__ = [
    "EVALUATIONS_PATH",
    "EVALUATION_PATH",
    "MAX_BODY_BYTES",
    "MAX_EVALUATIONS",
    "MAX_REQUEST_ID_CHARS",
    "METADATA_PATH",
    "AuthzenRequestError",
    "Evaluation",
    "check_pdp_url",
    "evaluate",
    "evaluate_batch",
    "metadata",
    "parse_evaluation",
    "response_request_id",
]

EVALUATION_PATH = "/access/v1/evaluation"
EVALUATIONS_PATH = "/access/v1/evaluations"
METADATA_PATH = "/.well-known/authzen-configuration"
#: Longest ``X-Request-ID`` echoed as it came (the spec sets no limit; a proxy's header
#: line is 4-8 KiB, and an id is an id).
MAX_REQUEST_ID_CHARS = 1024

#: Requests larger than this are refused before JSON parsing (413).
MAX_BODY_BYTES = 64 * 1024
#: Items in one batch; more is a 400 (split the batch).
MAX_EVALUATIONS = 100
_MAX_ID = 256
_MAX_SCOPES = 64

Semantic = Literal["execute_all", "deny_on_first_deny", "permit_on_first_permit"]
_SEMANTICS: tuple[Semantic, ...] = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")


def response_request_id(values: Sequence[str]) -> str:
    """The ``X-Request-ID`` an answer carries, from the request's values of that header.

    AuthZEN 1.0: "If the PEP specified a request identifier in the request, the PDP MUST
    include the same identifier in the response", and its value is "an arbitrary string".
    So one value goes back exactly as it came (``my request 42``, ``ü``, anything). Only
    what cannot be the same header value is replaced by a fresh id: two values (which
    one?), an empty one, one over :data:`MAX_REQUEST_ID_CHARS`, or one holding a control
    character other than a tab (RFC 9110 §5.5 field values exclude CTLs; some HTTP/1.1
    parsers let them through). The result is for the response header only: it is not
    sanitised for a log line or a body.
    """
    if len(values) == 1:
        value = values[0].strip(" \t")
        if 0 < len(value) <= MAX_REQUEST_ID_CHARS and not any(
            (ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in value
        ):
            return value
    return uuid.uuid4().hex


def check_pdp_url(url: str) -> str:
    """A configured PDP identifier (``https://pdp.example.com``), without a trailing ``/``.

    AuthZEN: the identifier "is a URL that uses the https scheme and has no query or
    fragment components"; http is accepted for development. Raises
    :class:`ConfigurationError` at start-up for anything else.
    """
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    if (
        parts.scheme not in ("http", "https")
        or not host
        or "@" in parts.netloc
        or parts.query
        or "?" in url
        or "#" in url
        or any(not 0x21 <= ord(ch) <= 0x7E for ch in url.strip())
    ):
        raise ConfigurationError(
            f"public URL {url!r}: expected an absolute http(s) URL with no user, query or "
            "fragment, such as https://pdp.example.com"
        )
    return url.strip().rstrip("/")


def metadata(pdp: str) -> dict[str, str]:
    """The PDP metadata document for the PDP identifier ``pdp`` (no trailing ``/``)."""
    return {
        "policy_decision_point": pdp,
        "access_evaluation_endpoint": pdp + EVALUATION_PATH,
        "access_evaluations_endpoint": pdp + EVALUATIONS_PATH,
    }


class AuthzenRequestError(ValueError):
    """The request document is malformed: answered 400 with this message (no echo of input)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    """One access question, validated and mapped onto ``decide_access``'s arguments."""

    subject_type: str
    user: str
    active_workspace: str | None
    scopes: frozenset[str] | None
    action: str
    resource_type: str
    resource_id: str | None
    workspace: str | None


def _object(doc: Mapping[str, Any], name: str, *, required: bool = True) -> Mapping[str, Any]:
    value = doc.get(name)
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise AuthzenRequestError(f"{name} must be a JSON object")
    return value


def _text(doc: Mapping[str, Any], name: str, where: str, *, required: bool = True) -> str | None:
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID:
        raise AuthzenRequestError(f"{where}.{name} must be a string of 1-{_MAX_ID} characters")
    return value


def parse_evaluation(doc: Mapping[str, Any]) -> Evaluation:
    """Validate one evaluation document; raise :class:`AuthzenRequestError` if malformed.

    AuthZEN §5: subject ``type`` and ``id`` are REQUIRED strings; action ``name`` is
    REQUIRED; resource ``type`` and ``id`` are REQUIRED; ``properties`` and ``context``
    are optional objects.
    """
    subject = _object(doc, "subject")
    action = _object(doc, "action")
    resource = _object(doc, "resource")
    context = _object(doc, "context", required=False)
    subject_props = _object(subject, "properties", required=False)
    resource_props = _object(resource, "properties", required=False)

    scopes: frozenset[str] | None = None
    raw_scopes = subject_props.get("scopes")
    if raw_scopes is not None:
        if (
            not isinstance(raw_scopes, list)
            or len(raw_scopes) > _MAX_SCOPES
            or not all(isinstance(s, str) and 0 < len(s) <= _MAX_ID for s in raw_scopes)
        ):
            raise AuthzenRequestError("subject.properties.scopes must be a list of action names")
        scopes = frozenset(raw_scopes)
    workspace = _text(resource_props, "workspace", "resource.properties", required=False)
    if workspace is None:
        workspace = _text(context, "workspace", "context", required=False)
    return Evaluation(
        subject_type=str(_text(subject, "type", "subject")),
        user=str(_text(subject, "id", "subject")),
        active_workspace=_text(subject_props, "workspace", "subject.properties", required=False),
        scopes=scopes,
        action=str(_text(action, "name", "action")),
        resource_type=str(_text(resource, "type", "resource")),
        resource_id=_text(resource, "id", "resource"),
        workspace=workspace,
    )


def _answer(decision: Decision) -> dict[str, Any]:
    # AuthZEN §6.2: the response's "context" may carry the reason; "reason_admin" is the
    # spec's example member for a message meant for administrators.
    return {
        "decision": decision.allowed,
        "context": {
            "reason": decision.reason.value,
            "status": decision.status,
            "reason_admin": {"en": decision.message},
        },
    }


def _refused(reason: Reason, message: str) -> dict[str, Any]:
    return _answer(Decision.of(reason, message, status=403))


async def evaluate(authorizer: Authorizer, evaluation: Evaluation) -> dict[str, Any]:
    """Decide one evaluation; the answer is the AuthZEN response object."""
    if evaluation.subject_type != "user":
        return _refused(Reason.POLICY_DENIED, "only subjects of type 'user' are supported")
    principal = Principal(
        user_id=evaluation.user,
        # The enforcement point vouches for the subject; no credential of ours was seen.
        kind=CredentialKind.SESSION,
        workspace=evaluation.active_workspace,
        scopes=evaluation.scopes,
        credential_id="authzen",
    )
    decision = await authorizer.adecide_access(
        principal=principal,
        action=evaluation.action,
        resource_kind=evaluation.resource_type,
        resource_id=evaluation.resource_id,
        workspace=evaluation.workspace,
    )
    return _answer(decision)


def _merge(defaults: Mapping[str, Any], item: Any) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise AuthzenRequestError("each evaluations item must be a JSON object")
    merged = {k: defaults[k] for k in ("subject", "action", "resource", "context") if k in defaults}
    for key in ("subject", "action", "resource", "context"):
        if key in item:
            merged[key] = item[key]  # an item's member replaces the default whole
    return merged


async def evaluate_batch(authorizer: Authorizer, doc: Mapping[str, Any]) -> dict[str, Any]:
    """Answer an ``/access/v1/evaluations`` document.

    The whole batch is validated before anything is decided, so a malformed item is a
    400 for the request rather than a half-answered batch.
    """
    items = doc.get("evaluations")
    if items is None or items == []:
        return await evaluate(authorizer, parse_evaluation(doc))
    if not isinstance(items, list):
        raise AuthzenRequestError("evaluations must be an array")
    if len(items) > MAX_EVALUATIONS:
        raise AuthzenRequestError(f"at most {MAX_EVALUATIONS} evaluations per request")
    options = _object(doc, "options", required=False)
    semantic = options.get("evaluations_semantic", "execute_all")
    if semantic not in _SEMANTICS:
        raise AuthzenRequestError(f"options.evaluations_semantic must be one of {list(_SEMANTICS)}")
    parsed: list[Evaluation] = []
    for index, item in enumerate(items):
        try:
            parsed.append(parse_evaluation(_merge(doc, item)))
        except AuthzenRequestError as exc:
            # Which item, so that a PEP can find it in a batch of a hundred.
            raise AuthzenRequestError(f"evaluations[{index}]: {exc}") from None
    answers: list[dict[str, Any]] = []
    for evaluation in parsed:
        answer = await evaluate(authorizer, evaluation)
        answers.append(answer)
        if semantic == "deny_on_first_deny" and not answer["decision"]:
            break
        if semantic == "permit_on_first_permit" and answer["decision"]:
            break
    return {"evaluations": answers}
