"""Instructions per ``decide_access`` call, counted by valgrind (repeatable, unlike time).

    .venv/bin/python benchmarks/count_instructions.py --tree ../baseline/src --tree src

For each tree, runs a child under ``valgrind --tool=callgrind`` twice, with 0 and with
``--calls`` decisions after the same set-up (compare.py's fixtures, ``PYTHONHASHSEED=0``),
and prints the difference over ``--calls``: the instructions one decision costs, whatever
else the machine is doing. A shared machine moves a time by a few per cent between runs;
this count moves by a few instructions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import gc, json, sys
from pathlib import Path
tree, fixtures, n = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), int(sys.argv[3])
sys.path[:] = [str(tree)] + [p for p in sys.path if not (Path(p) / "illumichat_authz").is_dir()]
import illumichat_authz as ia
assert Path(ia.__file__).resolve().is_relative_to(tree), ia.__file__
settings = ia.load_settings(fixtures / "config.toml", environment=False)
facts = ia.load_facts_file(fixtures / "facts.json")
authorizer = ia.Authorizer.from_settings(settings, facts=facts)
session = ia.CredentialKind.SESSION
qs = [(ia.Principal(user_id=q["user"], kind=session), q["assistant"], q["workspace"])
      for q in json.loads((fixtures / "questions.json").read_text())]
decide_access = authorizer.decide_access
for p, a, w in qs:  # warm: memos, specialised bytecode
    decide_access(principal=p, action="assistant:read", resource_kind="assistant",
                  resource_id=a, workspace=w)
gc.disable()
for i in range(n):
    p, a, w = qs[i & 255]
    decide_access(principal=p, action="assistant:read", resource_kind="assistant",
                  resource_id=a, workspace=w)
"""


def collected(tree: Path, fixtures: Path, calls: int) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            CHILD,
            str(tree),
            str(fixtures),
            str(calls),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stderr
    found = re.search(r"Collected : (\d+)", out)
    if found is None:
        raise SystemExit(f"no instruction count from valgrind:\n{out[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import compare  # its fixtures: the same data as the timed comparison

    with tempfile.TemporaryDirectory() as tmp:
        fixtures = Path(tmp)
        compare.write_fixtures(fixtures, 1000)
        counts = {}
        for tree in args.tree:
            tree = tree.resolve()
            per_call = collected(tree, fixtures, args.calls) - collected(tree, fixtures, 0)
            counts[str(tree)] = per_call / args.calls
            print(f"{tree}: {counts[str(tree)]:,.0f} instructions per decide_access")
    if len(counts) > 1:
        first = next(iter(counts.values()))
        for tree, value in list(counts.items())[1:]:
            print(f"{tree} / first tree: {value / first:.3f}")
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
