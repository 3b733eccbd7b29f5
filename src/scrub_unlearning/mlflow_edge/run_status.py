"""Honest run status: a run this project started is tagged with the host and process that own it, and on the next
start, runs of the experiment still RUNNING whose process is gone (killed, crashed, out of memory) are marked
KILLED - MLflow's status for that - with a note saying when and why (docs/design.md §7). Runs owned by another
host, or by a process that is still alive (a concurrent run), are left alone.
"""

from __future__ import annotations

import datetime
import os
import socket

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

HOST_TAG, PID_TAG, NOTE_TAG = "host", "pid", "status_note"


def owner_tags() -> dict[str, str]:
    """The tags that say which process owns a run."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def mark_abandoned_runs(client: MlflowClient, experiment_id: str, current_run_id: str | None = None) -> list[str]:
    """Mark KILLED every RUNNING run of the experiment that this host started and whose process is gone, and the
    RUNNING child runs under them. Returns the ids it marked."""
    host = socket.gethostname()
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000)
    abandoned = set()
    for run in running:
        tags = run.data.tags
        if run.info.run_id == current_run_id or tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
            continue
        pid = int(tags[PID_TAG])
        if pid != os.getpid() and not process_alive(pid):
            abandoned.add(run.info.run_id)
    for run in running:  # children of an abandoned parent (made by the same, dead process)
        if run.data.tags.get("mlflow.parentRunId") in abandoned:
            abandoned.add(run.info.run_id)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for run_id in sorted(abandoned):
        pid = next((r.data.tags.get(PID_TAG) for r in running if r.info.run_id == run_id), "?")
        client.set_tag(run_id, NOTE_TAG, f"marked KILLED at {when}: its process {pid} on {host} is gone "
                                         "(killed or crashed before the run ended)")
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
    return sorted(abandoned)
