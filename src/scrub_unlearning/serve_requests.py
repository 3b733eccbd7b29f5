"""Serve every deletion request dropped into a folder, oldest first (the operator's command; docs/design.md §7).

    python -m scrub_unlearning.serve_requests --incoming requests/incoming [--env base] [--done requests/done]
                                              [--failed requests/failed] [--project .]

For each `*.csv` in `--incoming`, before anything starts:

- the request is read and validated with the library (`serving.read_request`, the ledger, `validate_request`);
  a bad request (unreadable, unknown or duplicate ids, ids already forgotten, a request id reused for other ids)
  moves to `--failed` with `<file name>.reason.txt` beside it (the error and the time). It is not retried until
  someone moves it back into `--incoming`;
- a request the ledger already holds (promoted) is a no-op: one log line, the file moves to `--done`, and no Kedro
  session or MLflow run is opened.

Otherwise the `deletion_request` pipeline runs in this process (`KedroSession`, with `deletion_request.path` set
to the file). When the run ends and the ledger shows the request promoted, the file moves to `--done`; when the run
raised, or its model was registered but not promoted (a gate failed: the served model still holds the data), it
moves to `--failed` with the reason. The exit status is 1 when any request failed, else 0. One invocation at a
time per incoming folder (an advisory lock; a second one exits at once).

Kedro side: imports Kedro, and MLflow through the pipeline.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

try:  # advisory lock on the incoming folder (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

PIPELINE = "deletion_request"
# a top-level logger: Kedro's logging configuration (applied again by every session) resets the handlers of the
# loggers under the ones it configures (`scrub_unlearning`, `kedro`)
log = logging.getLogger("serve_requests")


def _setup_logging() -> None:
    """Plain one-line records on stderr (a cron log stays readable), independent of Kedro's rich console; called
    again after Kedro configured its logging."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s serve_requests: %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate, log.disabled = False, False


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _move(path: Path, folder: Path) -> Path:
    """Move `path` into `folder` under its own name, or `<stem>.<UTC time><suffix>` when that name is taken."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        target = folder / f"{path.stem}.{stamp}{path.suffix}"
    shutil.move(str(path), str(target))
    return target


def _fail(path: Path, folder: Path, reason: str) -> Path:
    """Move a request to the failed folder with `<name>.reason.txt` (the error and the time) beside it."""
    target = _move(path, folder)
    (folder / f"{target.name}.reason.txt").write_text(
        f"request file: {path.name}\nfailed at: {_now()}\nreason: {reason}\n"
        f"To retry, fix the cause and move {target.name} back to the incoming folder.\n", encoding="utf-8")
    log.error("%s: FAILED, moved to %s: %s", path.name, folder, reason)
    return target


def _pending(incoming: Path) -> list[Path]:
    """The requests waiting in `incoming`, oldest first (modification time, then name)."""
    files = [path for path in incoming.glob("*.csv") if path.is_file()]
    return sorted(files, key=lambda path: (path.stat().st_mtime, path.name))


class Project:
    """The project's configuration as `kedro run --env <env>` sees it, read without opening a session, and the
    training ids (the dataset loaded and split once, when the first request is screened)."""

    def __init__(self, root: Path, env: str | None) -> None:
        from kedro.framework.project import settings
        from kedro.framework.startup import bootstrap_project

        bootstrap_project(root)  # the project's settings, no session
        self.root, self.env = root, env
        args = dict(settings.CONFIG_LOADER_ARGS)
        run_env = env or args.get("default_run_env") or "local"
        loader = settings.CONFIG_LOADER_CLASS(conf_source=str(root / settings.CONF_SOURCE), env=run_env, **args)
        self.parameters = loader["parameters"]
        self.request = dict(self.parameters[PIPELINE])
        self._training_ids = None
        _setup_logging()

    def training_ids(self):
        if self._training_ids is None:
            from .data import load_dataset, make_splits

            splits = make_splits(load_dataset(self.parameters["dataset"]), self.parameters["splits"])
            self._training_ids = splits.ids["train"]
        return self._training_ids

    def ledger(self):
        from .pipelines.deletion_request.nodes import request_ledger

        return request_ledger(self.request)

    def run(self, path: Path) -> None:
        """The deletion-request pipeline on `path`, in this process (one Kedro session, one MLflow run)."""
        from kedro.framework.session import KedroSession

        with KedroSession.create(project_path=self.root, env=self.env,
                                 runtime_params={PIPELINE: {"path": str(path)}}) as session:
            try:
                session.run(pipeline_names=[PIPELINE])
            finally:
                _setup_logging()


def serve_one(path: Path, project: Project, done: Path, failed: Path,
              run: Callable[[Path], None] | None = None) -> bool:
    """Serve one request file; True when it ended in `done`."""
    from .pipelines.deletion_request.nodes import screen_request

    run = run or project.run
    try:
        request, earlier = screen_request(path, project.ledger(), project.training_ids())
    except (ValueError, TypeError, OSError) as error:
        _fail(path, failed, str(error))
        return False
    if earlier is not None:
        _move(path, done)
        log.info("%s: request %s was already served at %s (version %s): nothing to do, moved to %s", path.name,
                 request.request_id, earlier.get("time"), earlier.get("version_after"), done)
        return True

    log.info("%s: serving request %s (%d ids)", path.name, request.request_id, len(request))
    try:
        run(path.resolve())
    except Exception as error:  # the run's own log holds the traceback
        log.exception("%s: the %s run raised", path.name, PIPELINE)
        _fail(path, failed, f"the {PIPELINE} run failed: {type(error).__name__}: {error}")
        return False

    served = project.ledger().find(request.request_id, request.ids)
    if served is not None:
        _move(path, done)
        log.info("%s: request %s served: version %s replaces %s; moved to %s", path.name, request.request_id,
                 served.get("version_after"), served.get("version_before"), done)
        return True
    recorded = [entry for entry in project.ledger().entries() if entry["request_id"] == request.request_id]
    if recorded:
        entry = recorded[-1]
        checks = (entry.get("gates") or {}).get("checks") or {}
        failed_gates = sorted(name for name, check in checks.items() if not check.get("passed"))
        reason = (f"version {entry.get('version_after')} was registered but NOT promoted (failed gates: "
                  f"{', '.join(failed_gates) or 'none named'}); the served model (version "
                  f"{entry.get('version_before')}) still holds these examples")
    else:
        reason = f"the {PIPELINE} run finished without recording the request in the ledger"
    _fail(path, failed, reason)
    return False


def serve(incoming: Path, done: Path, failed: Path, project_root: Path, env: str | None) -> int:
    """Serve every request in `incoming`, oldest first; 0 when none failed, else 1."""
    requests = _pending(incoming)
    if not requests:
        log.info("no request in %s", incoming)
        return 0
    log.info("%d request(s) in %s (env %s)", len(requests), incoming, env or "default")
    project = Project(project_root, env)
    results = [serve_one(path, project, done, failed) for path in requests]
    failures = results.count(False)
    log.info("done: %d served or already served, %d failed", len(results) - failures, failures)
    return 1 if failures else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scrub_unlearning.serve_requests",
        description="Serve the deletion requests (CSV files) in a folder, oldest first: bad ones move to the failed "
                    "folder with a reason, served and already-served ones to the done folder.")
    parser.add_argument("--incoming", required=True, type=Path, help="folder of request CSVs to serve")
    parser.add_argument("--done", type=Path, help="where served requests go (default: <incoming>/../done)")
    parser.add_argument("--failed", type=Path,
                        help="where failed requests go, with <name>.reason.txt (default: <incoming>/../failed)")
    parser.add_argument("--env", default=None, help="Kedro environment (default: Kedro's, base + local)")
    parser.add_argument("--project", type=Path, default=Path.cwd(),
                        help="the Kedro project's root (default: the current directory)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    root = args.project.resolve()
    # relative paths (the arguments, and the ledger and key file in the parameters) are the project root's, as in
    # `kedro run`
    incoming, done, failed = ((root / path if not path.is_absolute() else path) if path else None
                              for path in (args.incoming, args.done, args.failed))
    done = done or incoming.parent / "done"
    failed = failed or incoming.parent / "failed"
    if not incoming.is_dir():
        log.error("no incoming folder %s", incoming)
        return 2
    os.chdir(root)
    lock = os.open(incoming, os.O_RDONLY)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("another serve_requests is serving %s: nothing done", incoming)
                return 0
        return serve(incoming, done, failed, root, args.env)
    finally:
        os.close(lock)


if __name__ == "__main__":
    sys.exit(main())
