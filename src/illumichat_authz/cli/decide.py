"""``illumichat-authz decide``: one request from flags, or a batch of JSON Lines.

Output is one JSON object per request: ``status``, ``reason``, ``message``, ``route``,
``action``, ``principal``, ``headers`` (other services parse these names). A batch line
that cannot be parsed yields an error line (status 400, ``malformed_request``) and the
batch goes on. Rate-limit counters live for the whole batch.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from ..authorizer import Authorizer
from ..decision import Decision
from ..reasons import Reason
from ..request import RequestFacts
from ._common import add_config_flag, add_request_flags, request_from_flags, settings_from

__all__ = ["register"]

#: Longest batch line accepted (a request with a webhook body fits comfortably).
MAX_LINE_CHARS = 1024 * 1024


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "decide",
        help="decide requests given by flags or JSON Lines",
        description=(
            "Decide one request given by flags (exit 0 if allowed, 1 if denied) or many "
            "given as JSON Lines with --batch (exit 0), and print one JSON object per request."
        ),
    )
    add_config_flag(parser)
    add_request_flags(parser)
    parser.add_argument(
        "--batch", metavar="FILE", help="JSON Lines of requests ('-' for standard input)"
    )
    parser.add_argument("--explain", action="store_true", help="include the policy explanation")
    parser.set_defaults(handler=run)


def _error_line(lineno: int, message: str) -> dict[str, Any]:
    return {
        "status": 400,
        "reason": Reason.MALFORMED_REQUEST.value,
        "message": f"line {lineno}: {message}",
        "route": None,
        "action": None,
        "principal": None,
        "headers": {},
        "resource": None,
        "role": None,
    }


def _headers(raw: Any) -> list[tuple[str, str]]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list) and all(isinstance(p, list) and len(p) == 2 for p in raw):
        pairs = [(p[0], p[1]) for p in raw]
    else:
        raise ValueError("headers must be [[name, value], ...] or {name: value}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
        raise ValueError("header names and values must be strings")
    return pairs


def request_from_json(obj: Any) -> RequestFacts:
    """Build a request from one batch object; ``ValueError`` says what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    unknown = set(obj) - {"method", "path", "query", "headers", "body", "client_ip", "scheme"}
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}")
    method, path = obj.get("method"), obj.get("path")
    if not isinstance(method, str) or not isinstance(path, str):
        raise ValueError("'method' and 'path' are required strings")
    for key in ("query", "body", "client_ip", "scheme"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ValueError(f"'{key}' must be a string")
    scheme = obj.get("scheme") or "http"
    if scheme not in ("http", "https"):
        raise ValueError("'scheme' must be http or https")
    return RequestFacts.build(
        method=method,
        path=path,
        query=obj.get("query") or "",
        headers=_headers(obj.get("headers")),
        body=(obj.get("body") or "").encode("utf-8", "surrogatepass"),
        peer=obj.get("client_ip"),
        scheme=scheme,
    )


def _output(decision: Decision, explain: bool) -> dict[str, Any]:
    out = decision.as_dict()
    if not explain:
        out.pop("explanation", None)
    return out


def _body_reader(request: RequestFacts) -> Any:
    body = request.body or b""
    return lambda limit: body if len(body) <= limit else None


def decide_lines(
    authorizer: Authorizer, lines: Iterable[str], *, explain: bool = False
) -> Iterator[dict[str, Any]]:
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            yield _error_line(lineno, f"longer than {MAX_LINE_CHARS} characters")
            continue
        try:
            request = request_from_json(json.loads(line))
        except (ValueError, RecursionError) as exc:
            yield _error_line(
                lineno,
                str(exc)
                if not isinstance(exc, json.JSONDecodeError)
                else f"invalid JSON: {exc.msg}",
            )
            continue
        yield _output(authorizer.decide(request, read_body=_body_reader(request)), explain)


def _open(path: str) -> contextlib.AbstractContextManager[TextIO]:
    if path == "-":
        # As for files: bytes that are not UTF-8 reach the parser as an error line.
        if isinstance(sys.stdin, io.TextIOWrapper):
            sys.stdin.reconfigure(encoding="utf-8", errors="surrogateescape")
        return contextlib.nullcontext(sys.stdin)
    return open(path, encoding="utf-8", errors="surrogateescape")


def run(args: argparse.Namespace) -> int:
    authorizer = Authorizer.from_settings(settings_from(args))
    try:
        return _run(args, authorizer)
    finally:
        authorizer.close()


def _run(args: argparse.Namespace, authorizer: Authorizer) -> int:
    out = sys.stdout
    if args.batch:
        try:
            source = _open(args.batch)
        except OSError as exc:
            print(f"illumichat-authz: cannot read {args.batch}: {exc.strerror}", file=sys.stderr)
            return 2
        with source as fh:
            for result in decide_lines(authorizer, fh, explain=args.explain):
                out.write(json.dumps(result) + "\n")
                out.flush()
        return 0
    request = request_from_flags(args)
    decision = authorizer.decide(request, read_body=_body_reader(request))
    out.write(json.dumps(_output(decision, args.explain)) + "\n")
    return 0 if decision.allowed else 1
