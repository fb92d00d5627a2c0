"""Run the benchmark sections, each in its own subprocess, and print everything they print.

``make bench`` runs ``.venv/bin/python bench/run.py --bench-python .venv-bench/bin/python``.

A section is one line in ``SECTIONS``: (name, interpreter, script, args). The interpreter is ``"app"``
(the app's virtualenv: the Python running this file, or ``--app-python``) or ``"bench"`` (the peer
libraries' virtualenv, ``--bench-python``). Every section runs from the repository root with the root on
``PYTHONPATH``. A section whose script does not exist yet is skipped with a note. A section prints what it
likes; a line starting with ``RESULT_JSON `` is also collected (see ``--json-out``).

Exit status: 0 when every section that ran succeeded, 1 when one failed (or a section asked for with
``--only`` could not run), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "RESULT_JSON "


class Section(NamedTuple):
    name: str
    interpreter: str  # "app" or "bench"
    script: str  # path relative to the repository root
    args: tuple[str, ...] = ()


SECTIONS: list[Section] = [
    Section("breakers", "bench", "bench/bench_breakers.py"),
    Section("redis", "app", "bench/bench_redis.py"),
    Section("retrieval", "app", "bench/bench_retrieval.py"),
    Section("answer", "app", "bench/bench_answer.py"),
]


def _run(section: Section, python: str, timeout_s: float) -> tuple[int, list[Any]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    results: list[Any] = []
    cmd = [python, str(ROOT / section.script), *section.args]
    print(f"$ {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        watchdog = threading.Timer(timeout_s, proc.kill)  # also fires when the section hangs silently
        watchdog.start()
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                if line.startswith(RESULT_PREFIX):
                    try:
                        results.append(json.loads(line[len(RESULT_PREFIX) :]))
                    except json.JSONDecodeError as exc:
                        print(f"[run.py] {section.name}: unreadable {RESULT_PREFIX.strip()} line: {exc}", flush=True)
            rc = proc.wait()
        finally:
            watchdog.cancel()
        if not watchdog.is_alive() and rc < 0 and time.monotonic() - started >= timeout_s:
            print(f"[run.py] {section.name}: killed after {timeout_s:g} s", flush=True)
    return rc, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bench-python",
        default=str(ROOT / ".venv-bench" / "bin" / "python"),
        help="interpreter of the peer-library virtualenv (default: .venv-bench/bin/python)",
    )
    parser.add_argument(
        "--app-python", default=sys.executable, help="interpreter of the app virtualenv (default: this one)"
    )
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run only this section (repeatable)", default=[]
    )
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per section (default 900)")
    parser.add_argument("--json-out", type=Path, help="also write the collected RESULT_JSON objects to this file")
    args = parser.parse_args(argv)

    known = {s.name for s in SECTIONS}
    unknown = [name for name in args.only if name not in known]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; known: {sorted(known)}")
    if args.list:
        for s in SECTIONS:
            state = "" if (ROOT / s.script).is_file() else "  (script missing: skipped)"
            print(f"{s.name:<12} {s.interpreter:<6} {s.script} {' '.join(s.args)}{state}")
        return 0

    pythons = {"app": args.app_python, "bench": args.bench_python}
    chosen = [s for s in SECTIONS if not args.only or s.name in args.only]
    outcomes: list[tuple[str, str, float]] = []
    collected: dict[str, list[Any]] = {}
    failed = False
    for section in chosen:
        print(f"\n===== {section.name} =====", flush=True)
        script = ROOT / section.script
        if not script.is_file():
            print(f"[run.py] skipped: {section.script} does not exist yet", flush=True)
            outcomes.append((section.name, "skipped (no script)", 0.0))
            failed |= section.name in args.only  # asked for by name, but nothing ran
            continue
        python = pythons[section.interpreter]
        if not Path(python).exists():
            hint = " (make .venv-bench/.installed)" if section.interpreter == "bench" else ""
            print(f"[run.py] failed: {section.interpreter} interpreter {python} not found{hint}", flush=True)
            outcomes.append((section.name, "FAILED (no interpreter)", 0.0))
            failed = True
            continue
        t0 = time.monotonic()
        rc, results = _run(section, python, args.timeout)
        elapsed = time.monotonic() - t0
        collected[section.name] = results
        if rc != 0:
            failed = True
        outcomes.append((section.name, "ok" if rc == 0 else f"FAILED (exit {rc})", elapsed))

    print("\n===== summary =====")
    for name, status, elapsed in outcomes:
        print(f"{name:<12} {status:<24} {elapsed:6.1f} s")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(collected, indent=2) + "\n")
        print(f"results written to {args.json_out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
