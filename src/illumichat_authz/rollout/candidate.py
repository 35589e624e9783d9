"""A candidate policy: compiled and checked before it may replace the live one.

The checks are the ones a person runs by hand before shipping a policy: it compiles (the
model, the rules and the route table load, and agree), ``policy check --strict`` finds
nothing (a warning is an error here: nobody is watching a rollout to read it), and every
``policy test`` table it ships (``tests/*.yaml`` beside the files) passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..compile import build_core
from ..config import Settings
from ..core import Core
from ..errors import ConfigurationError
from ..policy_check import check_policy
from ..policy_tables import load_table, run_table

__all__ = [
    "TABLE_SUFFIXES",
    "PolicyRejected",
    "compile_candidate",
    "policy_files",
    "policy_names",
]

TABLE_SUFFIXES = (".yaml", ".yml")
#: Bytes of one policy file we accept (a policy is kilobytes; this bounds a bad upload).
MAX_FILE_BYTES = 4 * 1024 * 1024


class PolicyRejected(ConfigurationError):
    """A candidate failed its checks; ``problems`` says each reason, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("policy refused: " + "; ".join(problems))


def policy_names(settings: Settings, directory: Path) -> list[str]:
    """The files a policy directory is made of, relative to it: the model, the rules, the
    routes and the ``policy test`` tables it ships (``tests/*.yaml``)."""
    pol = settings.policies
    names = [pol.model, pol.policy, pol.routes]
    tests = directory / "tests"
    if tests.is_dir():
        names += sorted(
            f"tests/{p.name}" for p in tests.iterdir() if p.suffix in TABLE_SUFFIXES and p.is_file()
        )
    return names


def policy_files(settings: Settings, directory: Path) -> dict[str, str]:
    """The files of the policy in ``directory`` by name (``policy_names``): what a
    database version stores. Raises ``PolicyRejected``."""
    names = policy_names(settings, directory)
    files: dict[str, str] = {}
    problems: list[str] = []
    for name in names:
        path = directory / name
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                problems.append(f"{name}: larger than {MAX_FILE_BYTES} bytes")
                continue
            files[name] = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            problems.append(f"{name}: missing in {directory}")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{name}: cannot be read ({type(exc).__name__})")
    if problems:
        raise PolicyRejected(problems)
    return files


def write_policy_files(files: Mapping[str, str], directory: Path) -> None:
    """Lay a stored version's files out as a policy directory (names are checked: a
    version is data from a database, and a name never leaves ``directory``)."""
    for name, text in files.items():
        parts = Path(name).parts
        if not parts or any(p in ("..", "") or p.startswith("/") for p in parts) or len(parts) > 2:
            raise PolicyRejected([f"{name!r}: not a policy file name"])
        if len(parts) == 2 and parts[0] != "tests":
            raise PolicyRejected([f"{name!r}: not a policy file name"])
        path = directory.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def compile_candidate(settings: Settings, directory: Path) -> Core:
    """The :class:`Core` of the policy in ``directory``, under ``settings``' other
    sections, once it has passed every check; else ``PolicyRejected`` with the reasons."""
    candidate = settings.model_copy(
        update={"policies": settings.policies.model_copy(update={"dir": directory})}
    )
    try:
        core = build_core(candidate)
    except ConfigurationError as exc:
        raise PolicyRejected([f"does not compile: {exc}"]) from None
    except Exception as exc:  # a parser's own error on a malformed file
        raise PolicyRejected([f"does not compile: {type(exc).__name__}: {exc}"]) from None
    problems = [
        f"policy check --strict: {finding}" for finding in check_policy(core.policy, core.routes)
    ]
    for name in policy_names(settings, directory)[3:]:  # the tables it ships
        try:
            result = run_table(core, load_table(directory / name), source=name)
        except ConfigurationError as exc:
            problems.append(f"{name}: {exc}")
            continue
        problems += [f"{name}: {failure}" for failure in result.failures[:20]]
        if len(result.failures) > 20:
            problems.append(f"{name}: {len(result.failures) - 20} more failures")
    if problems:
        raise PolicyRejected(problems)
    return core
