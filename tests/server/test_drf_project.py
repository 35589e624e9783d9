"""A Django + DRF project configured through settings alone, as docs/integrations.md says.

The test writes a real project (settings.py naming our classes in ``REST_FRAMEWORK``,
urls.py, views.py, wsgi.py, manage.py, an authz TOML and a facts file) to a temporary
directory, runs ``manage.py check`` in a subprocess, then serves it with gunicorn and sends
requests with minted session cookies. The views append to ``ran.log`` when they run, so a
denied request is seen never to reach one. Once with the middleware, once with the DRF
classes alone deciding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from proxy_stack import free_port, running

import illumichat_authz
from illumichat_authz.testing import session_cookie

SECRET = "drf-project-tests-secret-0123456789abcdef"
SRC = Path(illumichat_authz.__file__).resolve().parents[1]

SETTINGS = """
SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = "proj.urls"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"]
MIDDLEWARE = {middleware}
DATABASES = {{}}
USE_TZ = True
ILLUMICHAT_AUTHZ = {config!r}
REST_FRAMEWORK = {{
    "DEFAULT_AUTHENTICATION_CLASSES": ["{classes}.IllumiChatAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["{classes}.IllumiChatPermission"],
    "EXCEPTION_HANDLER": "{classes}.exception_handler",
    "UNAUTHENTICATED_USER": None,
}}
"""

VIEWS = """
from pathlib import Path

from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

RAN = Path(__file__).resolve().parents[1] / "ran.log"


def ran(name):
    with RAN.open("a") as log:
        log.write(name + "\\n")


class Assistant(APIView):
    authz_action = "assistant:read"

    def get(self, request, assistantId):
        ran("assistant " + assistantId)
        return Response({"user": request.user.pk, "assistant": assistantId})


class Chats(APIView):
    authz_action = "assistant:update"  # not what the table says of /api/chats: our 500

    def get(self, request):
        ran("chats")
        return Response({})


class Workspace(APIView):
    def get(self, request, workspaceId):
        ran("workspace " + workspaceId)
        raise NotFound("no such workspace here")  # DRF's own handler answers this
"""

URLS = """
from django.urls import path

from proj.views import Assistant, Chats, Workspace

urlpatterns = [
    path("api/assistants/<str:assistantId>", Assistant.as_view()),
    path("api/chats", Chats.as_view()),
    path("api/workspaces/<str:workspaceId>", Workspace.as_view()),
]
"""

WSGI = """
from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
"""

MANAGE = """
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""

FACTS = {
    "memberships": [
        {"user": "alice", "workspace": "w1", "role": "admin"},
        {"user": "bob", "workspace": "w1", "role": "member"},
    ],
    "assistants": [
        {"id": "a-pub", "workspace": "w1", "visibility": "public", "creator": "alice"},
        {"id": "a-priv", "workspace": "w1", "visibility": "private", "creator": "alice"},
    ],
}


@dataclass
class Project:
    root: Path
    url: str
    #: The views that ran for the last request.
    last_ran: list[str] = field(default_factory=list)

    def ran(self) -> list[str]:
        log = self.root / "ran.log"
        return log.read_text().splitlines() if log.exists() else []

    def get(self, path: str, user: str | None = None, **headers: str) -> httpx.Response:
        if user is not None:
            headers["cookie"] = session_cookie(user, secret=SECRET, workspace="w1")
        before = len(self.ran())
        response = httpx.get(self.url + path, headers=headers, timeout=10)
        self.last_ran = self.ran()[before:]
        return response


def write_project(
    root: Path, *, middleware: bool, classes: str = "illumichat_authz.integrations.drf"
) -> None:
    (root / "proj").mkdir(parents=True)
    (root / "authz.toml").write_text(
        f'[session]\nsecrets = ["{SECRET}"]\nworkspace_claim = "workspace"\n'
        '[facts]\nfile = "facts.json"\n'
    )
    (root / "facts.json").write_text(json.dumps(FACTS))
    chain = ["illumichat_authz.integrations.django.IllumiChatAuthzMiddleware"] if middleware else []
    files = {
        "proj/__init__.py": "",
        "proj/settings.py": SETTINGS.format(
            middleware=chain, config=str(root / "authz.toml"), classes=classes
        ),
        "proj/views.py": VIEWS,
        "proj/urls.py": URLS,
        "proj/wsgi.py": WSGI,
        "manage.py": MANAGE,
    }
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text).lstrip())


def project_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ILLUMICHAT_AUTHZ_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(root)])
    env["DJANGO_SETTINGS_MODULE"] = "proj.settings"
    return env


def manage_py_check(root: Path) -> None:
    check = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=root,
        env=project_env(root),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "System check identified no issues" in check.stdout


@pytest.fixture(scope="module", params=[True, False], ids=["middleware", "drf-classes-alone"])
def project(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("service")
    write_project(root, middleware=request.param)
    manage_py_check(root)
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    env = {"PYTHONPATH": project_env(root)["PYTHONPATH"], "DJANGO_SETTINGS_MODULE": "proj.settings"}
    with running([*argv, "--chdir", str(root), "proj.wsgi"], port, name="gunicorn", env=env):
        yield Project(root=root, url=f"http://127.0.0.1:{port}")


def test_allowed_request_runs_the_view(project: Project) -> None:
    response = project.get("/api/assistants/a-pub", user="bob")
    assert response.status_code == 200, response.text
    assert response.json() == {"user": "bob", "assistant": "a-pub"}
    assert project.last_ran == ["assistant a-pub"]


def test_anonymous_is_401_with_a_challenge(project: Project) -> None:
    response = project.get("/api/assistants/a-pub")
    assert response.status_code == 401
    assert project.last_ran == []
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == "authentication_required"
    bad = project.get("/api/assistants/a-pub", cookie="authjs.session-token=forged")
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    assert project.last_ran == []


@pytest.mark.parametrize(
    ("path", "user", "reason"),
    [
        ("/api/assistants/a-priv", "bob", "not_visible"),
        ("/api/assistants/a-pub", "mallory", "not_a_member"),
    ],
)
def test_denials_are_403_and_never_run_the_view(
    project: Project, path: str, user: str, reason: str
) -> None:
    response = project.get(path, user=user)
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == reason
    assert project.last_ran == []


def test_an_authz_action_the_table_disagrees_with_is_our_500(project: Project) -> None:
    # A configuration mistake (the route check lists it at start-up), never a 403 that
    # would send the caller to check a workspace role, and the view never runs.
    response = project.get("/api/chats", user="bob")
    assert response.status_code == 500, response.text
    assert response.json()["reason"] == "internal_error"
    assert project.last_ran == []


def test_other_errors_are_drfs_own_answer(project: Project) -> None:
    response = project.get("/api/workspaces/w1", user="bob")
    assert response.status_code == 404
    assert response.json() == {"detail": "no such workspace here"}
    assert project.last_ran == ["workspace w1"]


def test_the_names_under_integrations_django_still_work(tmp_path: Path) -> None:
    """Settings written for the earlier docs (``integrations.django.IllumiChatAuthentication``)
    load too: that import path went through the same cycle."""
    write_project(tmp_path, middleware=True, classes="illumichat_authz.integrations.django")
    manage_py_check(tmp_path)
