"""``illumichat-authz demo``: the policy at work on a small IllumiChat-shaped API.

Everything is in memory and made up for this run (facts, rate limits, a fresh development
session secret). ``--no-serve`` prints the commands and exits; ``--self-test`` serves on a
free loopback port, sends the requests itself, prints each status beside the expected one,
and exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import http.client
import shlex
import sys
from typing import Any

__all__ = ["register"]

_DEFAULT_PORT = 8765
_HOST = "127.0.0.1"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="serve a demo API guarded by the policy and show 200/401/403/429",
        description=(
            "Start a small IllumiChat-shaped API on 127.0.0.1 with seeded users and "
            "assistants, and print curl commands for allowed and denied requests. "
            "Needs the 'server' extra."
        ),
    )
    parser.add_argument("--port", type=int, help=f"default: {_DEFAULT_PORT} (self-test: any free)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--no-serve", action="store_true", help="print the commands and exit")
    mode.add_argument(
        "--self-test",
        action="store_true",
        help="serve, run the requests, compare statuses, exit non-zero on a mismatch",
    )
    parser.set_defaults(handler=_demo)


def _imports() -> tuple[Any, Any] | None:
    try:
        from ..demo.app import create_demo_app
        from ..server.background import BackgroundServer
    except ImportError:
        print(
            "illumichat-authz: the demo needs the server extra: "
            'pip install "illumichat-authz[server]"',
            file=sys.stderr,
        )
        return None
    return BackgroundServer, create_demo_app


def _variable(user: str) -> str:
    return user.upper().lstrip("!")


def _curl(scenario: Any, base: str) -> str:
    parts = ["curl", "-s", "-o", "/dev/null", "-w", "'%{http_code}\\n'"]
    if scenario.repeat == 1:
        parts = ["curl", "-i"]
    if scenario.method != "GET":
        parts += ["-X", scenario.method]
    if scenario.user is not None:
        cookie = "authjs.session-token=not-a-session-token"
        if not scenario.user.startswith("!"):
            cookie = f"${_variable(scenario.user)}"
        parts += ["-H", f'"Cookie: {cookie}"']
    if scenario.body is not None:
        parts += ["-H", "'Content-Type: application/json'", "-d", shlex.quote(scenario.body)]
    parts.append(shlex.quote(base + scenario.path))
    command = " ".join(parts)
    if scenario.repeat > 1:
        command = f"for i in $(seq {scenario.repeat}); do {command}; done"
    return command


def _print_intro(demo: Any, base: str) -> None:
    from ..demo import SCENARIOS, USERS, WORKSPACE

    out = sys.stdout
    out.write(f"IllumiChat authorization demo: {base}\n\n")
    roles = ", ".join(f"{user} ({role})" for user, role in USERS.items())
    out.write(f"Workspace {WORKSPACE}: {roles}\n")
    out.write(
        "Assistants: asst-public (public), asst-team (workspace), asst-private (private, "
        "created by adam), asst-shared (private, granted to mia)\n\n"
    )
    out.write("Session cookies (a development secret generated for this run; valid 8 hours):\n")
    for user in USERS:
        out.write(f"  export {_variable(user)}={shlex.quote(demo.cookies[user])}\n")
    out.write("\nTry:\n")
    for scenario in SCENARIOS:
        out.write(f"  # {scenario.title}: expect {scenario.expected}\n")
        out.write(f"  {_curl(scenario, base)}\n")
    out.flush()


def _start(app: Any, server_class: Any, port: int) -> Any:
    server = server_class(app, host=_HOST, port=port, log_level="error", access_log=False)
    return server.start()


def _send(port: int, scenario: Any, cookie: str | None) -> int:
    headers = {"Host": f"{_HOST}:{port}"}
    if cookie is not None:
        headers["Cookie"] = cookie
    body = scenario.body.encode() if scenario.body is not None else None
    if body is not None:
        headers["Content-Type"] = "application/json"
    connection = http.client.HTTPConnection(_HOST, port, timeout=5)
    try:
        connection.request(scenario.method, scenario.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return int(response.status)
    finally:
        connection.close()


def _self_test(demo: Any, port: int) -> int:
    from ..demo import SCENARIOS

    failures = 0
    print(f"Self-test against http://{_HOST}:{port} (the curl commands of `demo`, sent here)")
    for scenario in SCENARIOS:
        cookie = demo.cookie_for(scenario.user)
        try:
            statuses = [_send(port, scenario, cookie) for _ in range(scenario.repeat)]
            got = statuses[-1]
            # Every request before the last of a repeated one must pass (the limit's quota).
            ok = got == scenario.expected and all(s == 200 for s in statuses[:-1])
            shown = " ".join(str(s) for s in statuses)
        except OSError as exc:
            ok, shown = False, f"error: {type(exc).__name__}"
        failures += not ok
        mark = "ok  " if ok else "FAIL"
        print(f"  {mark} {shown:>23} (expected {scenario.expected})  {scenario.title}")
    print("all requests answered as expected" if not failures else f"{failures} mismatch(es)")
    return 1 if failures else 0


def _demo(args: argparse.Namespace) -> int:
    from ..demo import build_demo

    demo = build_demo()
    if args.no_serve:
        _print_intro(demo, f"http://{_HOST}:{args.port or _DEFAULT_PORT}")
        return 0
    loaded = _imports()
    if loaded is None:
        return 2
    server_class, create_demo_app = loaded
    app = create_demo_app(demo.authorizer)
    if args.self_test:
        try:
            server = _start(app, server_class, args.port or 0)
        except (RuntimeError, OSError) as exc:
            print(f"illumichat-authz: {exc}", file=sys.stderr)
            return 1
        try:
            return _self_test(demo, server.port)
        finally:
            server.stop()
            demo.authorizer.rate_limiter.close()
    # Bind first: cookies and commands are printed only for a server that is listening.
    try:
        server = _start(app, server_class, args.port or _DEFAULT_PORT)
    except (RuntimeError, OSError) as exc:
        print(f"illumichat-authz: {exc} (is another demo running? try --port)", file=sys.stderr)
        return 1
    _print_intro(demo, server.url)
    print("\nServing; Ctrl-C to stop.", flush=True)
    try:  # Ctrl-C propagates: main() exits 130 once the server has stopped.
        while server.alive:
            server.wait(0.5)
    finally:
        server.stop()
        demo.authorizer.rate_limiter.close()
    return 0
