"""Serve every deletion request dropped into a folder, oldest first (the operator's command; docs/design.md §7),
and look after the deletion ledger.

    python -m scrub_unlearning.serve_requests --incoming requests/incoming [--env base] [--done requests/done]
                                              [--failed requests/failed] [--project .]
    python -m scrub_unlearning.serve_requests verify [--env base] [--project .]          # exit 1 when BROKEN
    python -m scrub_unlearning.serve_requests repair-ledger [--env base] [--project .]    # after a torn line
    python -m scrub_unlearning.serve_requests migrate-ledger [--env base] [--project .]  # schema 1, once

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

While a request is unfinished in the ledger (a run was interrupted after its `intent` line), no other request
starts: the others stay in `--incoming` until the unfinished one is served again (moved back into `--incoming`),
which finishes it. A broken ledger (edited, reordered, deleted or torn lines) stops the command before anything
is served: `verify` says what is wrong, `repair-ledger` recovers from a torn last line.

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

        from .validation import check_environment, check_run_config

        bootstrap_project(root)  # the project's settings, no session
        self.root, self.env = root, env
        check_environment(root / settings.CONF_SOURCE, env)
        args = dict(settings.CONFIG_LOADER_ARGS)
        run_env = env or args.get("default_run_env") or "local"
        loader = settings.CONFIG_LOADER_CLASS(conf_source=str(root / settings.CONF_SOURCE), env=run_env, **args)
        self.parameters = loader["parameters"]
        check_run_config(self.parameters)  # a no-op request opens no session, so the hook's check runs here
        self.request = dict(self.parameters[PIPELINE])
        try:
            self.mlflow = loader["mlflow"]
        except (KeyError, ValueError):
            self.mlflow = {}
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

    def use_registry(self) -> None:
        """Point this process's MLflow client at the registry `kedro run --env <env>` uses (`mlflow.yml`)."""
        import mlflow

        server = (self.mlflow or {}).get("server") or {}
        tracking = server.get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        if tracking:
            mlflow.set_tracking_uri(tracking)
        mlflow.set_registry_uri(server.get("mlflow_registry_uri") or tracking or mlflow.get_tracking_uri())

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
              run: Callable[[Path], None] | None = None) -> bool | None:
    """Serve one request file; True when it ended in `done`, False in `failed`, None when it stays in the incoming
    folder (another request is unfinished in the ledger). A broken ledger (`LedgerError`) is raised."""
    from .pipelines.deletion_request.nodes import screen_request
    from .serving import LedgerError, RequestInFlight

    run = run or project.run
    try:
        request, earlier = screen_request(path, project.ledger(), project.training_ids())
    except LedgerError:
        raise
    except RequestInFlight as error:
        log.error("%s: left in the incoming folder: %s", path.name, error)
        return None
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
    except LedgerError:
        raise
    except Exception as error:  # the run's own log holds the traceback
        log.exception("%s: the %s run raised", path.name, PIPELINE)
        reason = f"the {PIPELINE} run failed: {type(error).__name__}: {error}"
        _fail(path, failed, reason + _unfinished(project, request))
        return False

    ledger = project.ledger()
    served = ledger.find(request.request_id, request.ids)
    if served is not None:
        _move(path, done)
        log.info("%s: request %s served: version %s replaces %s; moved to %s", path.name, request.request_id,
                 served.get("version_after"), served.get("version_before"), done)
        return True
    attempt = ledger.state(request.request_id, request.ids)
    if attempt is not None and attempt.finished:
        checks = (attempt.record.get("gates") or {}).get("checks") or {}
        failed_gates = sorted(name for name, check in checks.items() if not check.get("passed"))
        reason = (f"version {attempt.version} was registered but NOT promoted (failed gates: "
                  f"{', '.join(failed_gates) or 'none named'}); the served model (version "
                  f"{attempt.version_before}) still holds these examples")
    elif attempt is not None:
        reason = f"the {PIPELINE} run stopped before the request was finished" + _unfinished(project, request)
    else:
        reason = f"the {PIPELINE} run finished without recording the request in the ledger"
    _fail(path, failed, reason)
    return False


def _unfinished(project: Project, request) -> str:
    """A sentence for the failed request's reason when its attempt is unfinished in the ledger, else ''."""
    try:
        attempt = project.ledger().state(request.request_id, request.ids)
    except ValueError:
        return ""
    if attempt is None or attempt.finished:
        return ""
    return (f"; the request is unfinished in the ledger (last step '{attempt.step}' at line "
            f"{attempt.lines[attempt.step]}): move the file back to the incoming folder to finish it — no other "
            f"request is served until then")


def serve(incoming: Path, done: Path, failed: Path, project_root: Path, env: str | None) -> int:
    """Serve every request in `incoming`, oldest first; 0 when none failed, else 1."""
    requests = _pending(incoming)
    if not requests:
        log.info("no request in %s", incoming)
        return 0
    log.info("%d request(s) in %s (env %s)", len(requests), incoming, env or "default")
    project = Project(project_root, env)
    from .serving import LedgerError

    results, waiting = [], []
    try:
        for path in requests:
            outcome = serve_one(path, project, done, failed)
            if outcome is None:
                waiting.append(path)
            else:
                results.append(outcome)
        if waiting and len(waiting) < len(requests):  # the unfinished request may have been finished since: retry
            results += [serve_one(path, project, done, failed) or False for path in waiting]
        else:
            results += [False] * len(waiting)  # still waiting: counted as failed (exit status 1)
    except LedgerError as error:
        log.error("the deletion ledger is broken, nothing more is served: %s", error)
        return 1
    failures = results.count(False)
    log.info("done: %d served or already served, %d failed or waiting", len(results) - failures, failures)
    return 1 if failures else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scrub_unlearning.serve_requests",
        description="Serve the deletion requests (CSV files) in a folder, oldest first: bad ones move to the failed "
                    "folder with a reason, served and already-served ones to the done folder. Also: `verify`, "
                    "`repair-ledger`, `migrate-ledger` (see `<command> --help`).")
    parser.add_argument("--incoming", required=True, type=Path, help="folder of request CSVs to serve")
    parser.add_argument("--done", type=Path, help="where served requests go (default: <incoming>/../done)")
    parser.add_argument("--failed", type=Path,
                        help="where failed requests go, with <name>.reason.txt (default: <incoming>/../failed)")
    _project_arguments(parser)
    return parser


def _project_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default=None, help="Kedro environment (default: Kedro's, base + local)")
    parser.add_argument("--project", type=Path, default=Path.cwd(),
                        help="the Kedro project's root (default: the current directory)")


LEDGER_COMMANDS = {
    "verify": "check the ledger's chain and compare it with the Model Registry; print OK or BROKEN with the "
              "reasons (exit 1 when BROKEN); orphan versions are tagged ledger_status=orphan",
    "repair-ledger": "recover from a torn (unterminated) last line: complete it when it is whole and authentic, "
                     "else move the fragment aside; then serve the interrupted request again",
    "migrate-ledger": "convert a schema 1 ledger (unchained lines) to the authenticated, chained schema, once",
}


def ledger_command(command: str, argv: list[str]) -> int:
    """`verify`, `repair-ledger` or `migrate-ledger` on the ledger of `deletion_request` in `--env`."""
    parser = argparse.ArgumentParser(prog=f"python -m scrub_unlearning.serve_requests {command}",
                                     description=LEDGER_COMMANDS[command])
    _project_arguments(parser)
    args = parser.parse_args(argv)
    root = args.project.resolve()
    os.chdir(root)  # the ledger and key paths in the parameters are the project root's
    from .serving import LedgerError

    project = Project(root, args.env)
    try:
        if command == "verify":
            from .pipelines.verify_ledger.nodes import ledger_verdict

            project.use_registry()
            verdict = ledger_verdict(project.request, project.parameters["registry"])
            print(verdict.text())
            return 0 if verdict.ok else 1
        ledger = project.ledger()
        if command == "repair-ledger":
            print(ledger.repair_torn_tail())
        else:
            from .serving import migrate_schema1

            print(migrate_schema1(ledger.path, ledger.key))
        return 0
    except (LedgerError, OSError) as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    if argv and argv[0] in LEDGER_COMMANDS:
        return ledger_command(argv[0], argv[1:])
    args = _parser().parse_args(argv)
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
