"""The per-request audit, demonstrated and costed (README "Deletion requests", docs/benchmarks.md):
`python -m benchmarks.request_audit [--env base|cifar5] [--size N]`.

In a fresh copy of the project (conf, src; the raw data and the model stores linked, so a cached Original or
backbone is reused) under a temporary folder, in this process:
1. `register`: the clean Original registered and its K audit shadows trained (the one-time cost);
2. request A, then request B (disjoint, N training ids each of one class), both served with the configured method
   (SCRUB+R) and audited by default; B starts from the version A produced and the shadows A left;
3. request C served with a no-op method (the Original returned unchanged; registered here only, never shipped),
   then, when it was caught and not promoted, retried with Retrain (`deletion_request.method=retrain`, the
   documented retry), else request D served with Retrain: what the audit says about a model that remembers and
   about one that never saw the data;
Prints a table (times, AUC, flagged shares, promotion) and writes it as Markdown with `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from benchmarks.config import find_project_root


def register_noop_method() -> str:
    """Add the test-only no-op method (returns the Original unchanged) to the method registry and the request
    validation of this process; returns its name."""
    from scrub_unlearning import methods, validation

    def unlearn(original, task, params, device):
        return original, {"note": "no-op: the Original unchanged (test only)"}

    methods.METHODS["noop"] = methods.Method("noop", unlearn, "No-op (test only)")
    methods.DISPLAY_NAMES["noop"] = "No-op (test only)"
    validation.REQUEST_PARAMETERS["method"] = replace(validation.REQUEST_PARAMETERS["method"],
                                                      choices=tuple(methods.METHODS))
    return "noop"


def _copy_project(source: Path, target: Path, env: str) -> None:
    shutil.copy(source / "pyproject.toml", target)
    shutil.copytree(source / "conf", target / "conf", ignore=shutil.ignore_patterns("local"))
    (target / "conf" / "local").mkdir()
    shutil.copytree(source / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    root = "data" if env == "base" else f"data/{env}"
    (target / root / "06_models").mkdir(parents=True)
    for linked in ("data/01_raw", f"{root}/06_models/store", f"{root}/06_models/pretrained"):
        if (source / linked).exists() and not (target / linked).exists():
            (target / linked).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(source / linked, target / linked)


def _run(project: Path, env: str, pipeline: str, params: dict | None = None) -> float:
    from kedro.framework.session import KedroSession

    start = time.perf_counter()
    with KedroSession.create(project_path=project, env=None if env == "base" else env,
                             runtime_params=params or {}) as session:
        session.run(pipeline_names=[pipeline])
    import mlflow

    while mlflow.active_run():  # a run a hook reopened after the session's run ended: one run per session here
        mlflow.end_run()
    return time.perf_counter() - start


def _write_request(project: Path, name: str, ids: list[int]) -> Path:
    path = project / "conf" / f"request_{name}.csv"
    pd.DataFrame({"request_id": f"audit-{name}", "id": ids}).to_csv(path, index=False)
    return path


@contextmanager
def _context(project: Path, env: str):
    """The environment's Kedro context (parameters and catalog), through a session closed on exit."""
    from kedro.framework.session import KedroSession

    with KedroSession.create(project_path=project, env=None if env == "base" else env) as session:
        yield session.load_context()


def _requests(project: Path, env: str, size: int | None, seed: int) -> dict[str, list[int]]:
    """Four disjoint requests of `size` training ids of one class (the UP scenario's forget class; default: the UP
    forget size, or a quarter of the class when it has fewer than four times that)."""
    with _context(project, env) as context:
        table = context.catalog.load("split_table")
        klass = int(context.params["scenarios"]["up"]["forget"]["class_id"])
        default = int(context.params["scenarios"]["up"]["forget"]["size"])
    train = table[(table["split"] == "train") & (table["label"] == klass)]["id"].to_numpy()
    size = size or min(default, len(train) // 4)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).numpy()
    if 4 * size > len(train):
        raise SystemExit(f"--size {size}: class {klass} has {len(train)} training examples, 4 requests need "
                         f"{4 * size}")
    chosen = train[order]
    return {name: sorted(int(i) for i in chosen[k * size:(k + 1) * size]) for k, name in enumerate("ABCD")}


def _summary(project: Path, env: str) -> dict:
    root = project / ("data" if env == "base" else f"data/{env}")
    folder = root / "08_reporting" / "deletion_request" / "summary.json"
    latest = sorted(folder.iterdir())[-1]
    return json.loads((latest / "summary.json").read_text())


def _row(label: str, seconds: float, summary: dict) -> dict:
    audit = summary.get("audit") or {}
    served = audit.get("served") or {}
    ulira_result = audit.get("ulira") or {}
    gates = (summary.get("gates") or {}).get("checks") or {}
    return {"step": label, "method": summary.get("method"), "wall s": round(seconds, 1),
            "unlearn s": round(float(summary.get("seconds") or 0.0), 1),
            "audit s": round(float(audit.get("seconds") or 0.0), 1),
            "earlier requests in shadows": audit.get("earlier_requests"),
            "U-LiRA AUC [95%]": (f"{ulira_result['auc']:.3f} [{ulira_result['ci_low']:.3f}, "
                                 f"{ulira_result['ci_high']:.3f}]") if ulira_result else "n/a",
            "flagged request": f"{served['request']['flagged']}/{served['request']['n']}" if served else "n/a",
            "flagged never-seen": f"{served['chance']['flagged']}/{served['chance']['n']}" if served else "n/a",
            "Fisher p": f"{served['fisher_p']:.3g}" if served else "n/a",
            "gates failed": ", ".join(k for k, v in gates.items() if not v.get("passed")) or "none",
            "promoted": summary.get("promoted")}


def pool_shadow_seconds(project: Path, env: str, ids: list[int], timed: int) -> float:
    """Seconds per shadow of today's alternative, the pool-based U-LiRA that trains K shadows for each request (on
    base ∪ H_k: the training set less half the request's pool), measured on `timed` of them (median)."""
    from scrub_unlearning.evaluation.shadows import ShadowPlan, ShadowStore, plan_shadows, train_shadows
    from scrub_unlearning.pipelines.ingestion.nodes import load_raw_dataset, split_dataset
    from scrub_unlearning.pipelines.originals.nodes import _spec, prepare_training_set, pretrain_backbone
    from scrub_unlearning.training import configure_runtime

    with _context(project, env) as context:
        params = context.params
        raw = load_raw_dataset(params["dataset"])
        splits, _ = split_dataset(raw, params["splits"], params["scenarios"], params["training_sets"],
                                  params["seeds"], params["ulira"])
        root = project / ("data" if env == "base" else f"data/{env}")
        backbone, info = pretrain_backbone(raw, splits, params["pretraining"], params["model"], params["splits"],
                                           params["runtime"], ShadowStore(root / "06_models" / "pretrained"))
        training_set, _ = prepare_training_set(splits, params["training_sets"].get("clean"), backbone, info,
                                               "clean", 1)
        request = torch.tensor(ids)
        klass = (int(training_set.labels[torch.searchsorted(training_set.ids, request[:1])]),)
        plan = plan_shadows(training_set, request, klass, max(timed, 3), seed=1)
        plan = ShadowPlan(plan.pool_ids, plan.halves[:timed], plan.forgets[:timed], plan.seeds[:timed])
        device = configure_runtime(params["runtime"])
        seconds = []
        for k in range(timed):
            single = ShadowPlan(plan.pool_ids, [plan.halves[k]], [plan.forgets[k]], [plan.seeds[k]])
            _, manifest = train_shadows(training_set, single, _spec(splits, params["model"]), params["training"],
                                        ShadowStore(tempfile.mkdtemp()), device)
            seconds.append(manifest["seconds"])
    return float(sorted(seconds)[len(seconds) // 2])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="base")
    parser.add_argument("--size", type=int, default=None, help="ids per request (default: the UP forget size)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="write the table as Markdown here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    parser.add_argument("--timed-shadows", type=int, default=3,
                        help="pool-based shadows trained to time today's per-request alternative (median)")
    args = parser.parse_args(argv)
    source = find_project_root()
    from kedro.framework.startup import bootstrap_project

    work = Path(tempfile.mkdtemp(prefix="request_audit_"))
    project = work / "project"
    project.mkdir()
    _copy_project(source, project, args.env)
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    sys.path.insert(0, str(project / "src"))
    os.chdir(project)
    bootstrap_project(project)
    noop = register_noop_method()
    rows = []
    seconds = _run(project, args.env, "register")
    root = project / ("data" if args.env == "base" else f"data/{args.env}")
    manifest = json.loads((root / "07_model_output" / "registration_audit.json").read_text())
    print(f"register: {seconds:.1f} s wall; {manifest['num_shadows']} audit shadows, {manifest['trained']} trained "
          f"in {manifest['seconds']:.1f} s", flush=True)
    requests = _requests(project, args.env, args.size, args.seed)
    size = len(requests["A"])
    def serve(label: str, name: str, method: str | None) -> dict:
        overrides = {"path": str(_write_request(project, name, requests[name]))}
        if method:
            overrides["method"] = method
        seconds = _run(project, args.env, "deletion_request", {"deletion_request": overrides})
        summary = _summary(project, args.env)
        rows.append(_row(f"request {label}", seconds, summary))
        print(rows[-1], flush=True)
        return summary

    serve("A", "A", None)
    serve("B", "B", None)
    if serve("C, no-op", "C", noop)["promoted"]:  # not caught: Retrain on another request of the same size
        serve("D, retrain", "D", "retrain")
    else:  # caught and not promoted: the documented retry, with Retrain
        serve("C retried, retrain", "C", "retrain")
    table = pd.DataFrame(rows)
    per_shadow = pool_shadow_seconds(project, args.env, requests["A"], args.timed_shadows)
    k = int(manifest["num_shadows"])
    audit_a = float(rows[0]["audit s"])
    header = (f"`python -m benchmarks.request_audit --env {args.env}` ({size} ids per request, K = {k}); audit "
              f"shadows trained once in {manifest['seconds']:.1f} s.\n\nToday's per-request alternative at the "
              f"same K (pool-based U-LiRA: K shadows trained for the request, then the same K unlearning runs): "
              f"{per_shadow:.1f} s per shadow (median of {args.timed_shadows}) x {k} + request A's {audit_a:.1f} s "
              f"of unlearning = {k * per_shadow + audit_a:.1f} s, against {audit_a:.1f} s for the audit: "
              f"{(k * per_shadow + audit_a) / audit_a:.1f}x.")
    text = header + "\n\n" + table.to_markdown(index=False) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
