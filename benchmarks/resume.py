"""Resume after a kill, measured (README "Reliability"): `python -m benchmarks.resume [--env test]`.

In a fresh copy of the project (pyproject, conf without local, src) under a temporary folder: a full `kedro run`
from empty data; the data removed again and a second run killed (SIGKILL to its process group) at half the full
run's wall time; a rerun; a rerun with nothing changed (the floor: every model reused). Prints one line per run (wall
time, tasks completed, models reused and computed) and the ratios to the full run. Wall times on a shared machine
are noisy: the ratios come from one sequence of runs, run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.config import find_project_root


def _copy_project(source: Path, target: Path) -> None:
    shutil.copy(source / "pyproject.toml", target)
    shutil.copytree(source / "conf", target / "conf", ignore=shutil.ignore_patterns("local"))
    (target / "conf" / "local").mkdir()
    shutil.copytree(source / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


def _data_root(project: Path, env: str) -> Path:
    return project / "data" / env if env != "base" else project / "data"


def _forget_outputs(project: Path, env: str) -> None:
    for path in (_data_root(project, env), project / "mlruns"):
        shutil.rmtree(path, ignore_errors=True)
    (project / "mlflow.db").unlink(missing_ok=True)


def _run(project: Path, env: str, label: str, kill_after: float | None = None) -> dict:
    command = [sys.executable, "-m", "kedro", "run"] + ([] if env == "base" else ["--env", env])
    variables = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(project / "src")}
    log = project / f"{label}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=project, env=variables, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = log.read_text()
    done = re.findall(r"Completed (\d+) out of (\d+) tasks", text)
    record = {"run": label, "seconds": time.perf_counter() - start, "exit": process.returncode,
              "tasks": f"{done[-1][0]}/{done[-1][1]}" if done else "0",
              "reused": text.count("reused from the model store"), "computed": text.count(": done in")}
    print(f"{label}: {record['seconds']:.1f} s, exit {record['exit']}, tasks {record['tasks']}, "
          f"models reused {record['reused']}, computed {record['computed']}", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="test", help="Kedro environment (base: `kedro run` without --env)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="resume-") as folder:
        project = Path(folder)
        _copy_project(find_project_root(), project)
        full = _run(project, args.env, "full")
        _forget_outputs(project, args.env)
        _run(project, args.env, "killed at half", kill_after=full["seconds"] / 2)
        rerun = _run(project, args.env, "rerun")
        floor = _run(project, args.env, "rerun, nothing changed")
    print(f"rerun / full = {rerun['seconds'] / full['seconds']:.2f}; "
          f"nothing changed / full = {floor['seconds'] / full['seconds']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
