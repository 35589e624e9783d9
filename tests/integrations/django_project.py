"""A throwaway Django + DRF project run in a subprocess (Django settings are per process).

It has the admin, a health check, a view the route table does not list and a DRF view
whose ``authz_action`` disagrees with the table: what the host-route and route-check
tests need, configured through settings alone as a Django user writes them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import illumichat_authz

#: The package this test process imports, so the subprocess runs the same code.
SRC = Path(illumichat_authz.__file__).resolve().parents[1]
CLI = (sys.executable, "-m", "illumichat_authz.cli")

SETTINGS = """
SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "mysite.urls"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "rest_framework",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "illumichat_authz.integrations.django.IllumiChatAuthzMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ILLUMICHAT_AUTHZ = {config!r}
"""

URLS = """
from django.contrib import admin
from django.http import JsonResponse
from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

RAN = []

def healthz(request):
    RAN.append("healthz")
    return JsonResponse({"ok": True})

def unlisted(request):
    RAN.append("unlisted")
    return JsonResponse({"ran": True})

class Assistant(APIView):
    authz_action = "assistant:update"  # the table says GET is assistant:read

    def get(self, request, assistantId):
        RAN.append("assistant")
        return Response({"id": assistantId})

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz/", healthz),
    path("api/unlisted", unlisted),
    path("api/assistants/<str:assistantId>", Assistant.as_view()),
]
"""

# Requests through Django's test client; prints what happened as JSON.
CLIENT = """
import json, logging, sys
import django
django.setup()
from django.test import Client
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("illumichat_authz").addHandler(Keep())
from mysite import urls
out = {}
try:
    c = Client(headers={"host": "testserver"})  # HTTP/1.1 needs a Host
    for p in sys.argv[1:]:
        r = c.get(p)
        out[p] = [r.status_code, r.get("Location", "")]
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
out["ran"] = urls.RAN
out["logs"] = records
print(json.dumps(out))
"""


def make_project(root: Path, config_text: str, host_routes: str | None = None) -> Path:
    """Write the project and its authz.toml under ``root``; return ``root``."""
    (root / "mysite").mkdir(parents=True, exist_ok=True)
    (root / "mysite" / "__init__.py").write_text("", encoding="utf-8")
    if host_routes is not None:
        (root / "host-routes.toml").write_text(host_routes, encoding="utf-8")
    (root / "authz.toml").write_text(config_text, encoding="utf-8")
    settings = SETTINGS.replace("{config!r}", repr(str(root / "authz.toml")))
    (root / "mysite" / "settings.py").write_text(settings, encoding="utf-8")
    (root / "mysite" / "urls.py").write_text(URLS, encoding="utf-8")
    return root


def environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILLUMICHAT_AUTHZ_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(root)])
    env["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
    return env


def get(root: Path, *paths: str) -> dict[str, Any]:
    """GET each path through Django's test client in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, *paths],
        cwd=root,
        env=environment(root),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def policy_check(root: Path, app: str) -> subprocess.CompletedProcess[str]:
    """``illumichat-authz policy check --app APP`` in the project directory."""
    return subprocess.run(
        [*CLI, "policy", "check", "--config", "authz.toml", "--app", app],
        cwd=root,
        env=environment(root),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
