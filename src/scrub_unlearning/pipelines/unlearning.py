"""The DAG, built from the scenarios written as parameters (DESIGN §4):

    raw -> splits -> per seed and training set: Original -> per seed and scenario: forget set -> Retrain
    -> each method -> metrics -> scenario table (all seeds) -> run-wide table and summary (+ MLflow)

Training sets (`clean`, `rc_confused`) and scenarios are namespaces with one sub-namespace per seed
(`clean.seed_1`, `up.seed_1`), so scenarios on the same data share one Original per seed, and a seed redraws forget
sets and reseeds every initialisation while the splits stay fixed.
"""

from __future__ import annotations

from functools import partial

from kedro.pipeline import Pipeline, node

from ..methods import get_method
from . import nodes
from .deletion import deletion_request_pipeline, registration_pipeline

RUNTIME = "params:runtime"


def bind(func, **fixed):
    """`func` with some keyword arguments fixed (seed, method, names), keeping its name for Kedro's logs."""
    bound = partial(func, **fixed)
    bound.__name__, bound.__qualname__, bound.__doc__ = func.__name__, func.__qualname__, func.__doc__
    return bound


def ingestion_pipeline() -> Pipeline:
    """Load the dataset, split it, and validate every scenario against the splits."""
    return Pipeline([
        node(nodes.load_raw_dataset, "params:dataset", "raw_dataset", name="load_raw_dataset", tags=["ingestion"]),
        node(nodes.split_dataset,
             ["raw_dataset", "params:splits", "params:scenarios", "params:training_sets", "params:seeds"],
             ["splits", "split_table"], name="split_dataset", tags=["ingestion"]),
    ])


def seeded(name: str, seed: int) -> str:
    """The namespace of `name` (a training set or scenario) for one seed."""
    return f"{name}.seed_{seed}"


def training_set_pipeline(name: str, seed: int, all_tags: list[str]) -> Pipeline:
    """The training set `name` and its Original for one seed, in namespace `<name>.seed_<seed>`."""
    template = Pipeline([
        node(bind(nodes.prepare_training_set, name=name, seed=seed), ["splits", "params:training_set"],
             ["training_set", "training_labels"], name="prepare_training_set", tags=all_tags),
        node(bind(nodes.train_original, seed=seed),
             ["splits", "training_set", "params:model", "params:training", RUNTIME],
             ["original_model", "original_info"], name="train_original", tags=all_tags),
    ])
    return Pipeline(
        template, namespace=seeded(name, seed), inputs={"splits"},
        parameters={"params:training_set": f"params:training_sets.{name}", "params:model": "params:model",
                    "params:training": "params:training", RUNTIME: RUNTIME},
        tags=["training"],
    )


def scenario_pipeline(name: str, scenario: dict, methods: list[str], seed: int, all_tags: list[str],
                      with_ulira: bool = False) -> Pipeline:
    """Forget set, Retrain, every method and one evaluation per model for one seed, in `<name>.seed_<seed>`.

    Nodes of a method are tagged `method.<name>`; shared nodes (data, Original, Retrain and their evaluation)
    carry every method's tag so `kedro run --tags method.<name>` has what it needs."""
    shared = ["splits", "training_set", "forget_set", "params:scenario"]
    method_nodes, evaluation_nodes = [], []
    rewinders = {m: [f"method.{r}" for r in methods if get_method(r).rewinds == m] for m in methods}
    for method in ["retrain", *methods]:
        registered = get_method(method)
        # a rewound method's run belongs to its rewinder's tagged subset too (scrub for scrub_r)
        tags = all_tags if method == "retrain" else [f"method.{method}", *rewinders[method]]
        inputs = ["original_model", *shared, "params:method_params", "params:training", RUNTIME]
        if registered.rewinds:
            inputs.append(f"{registered.rewinds}_trajectory")
        method_nodes.append(node(
            bind(nodes.run_method, method=method, seed=seed), inputs,
            [f"{method}_model", f"{method}_info", f"{method}_trajectory"], name=f"run_{method}", tags=tags))
    attack_nodes = []
    if with_ulira:
        attack_nodes.append(node(
            bind(nodes.train_shadow_models, seed=seed),
            ["original_model", *shared, "params:ulira", "params:training", RUNTIME, "shadow_store"],
            ["shadows", "shadow_manifest"], name="train_shadow_models", tags=all_tags))
        for model in ["original", "retrain", *methods]:
            rewinds = get_method(model).rewinds if model != "original" else None
            inputs = ["shadows", *shared, "params:method_params", "params:training", "params:ulira", RUNTIME]
            if rewinds:
                inputs.append(f"{rewinds}_shadow_trajectories")
            tags = all_tags if model in ("original", "retrain") else [f"method.{model}", *rewinders.get(model, [])]
            attack_nodes.append(node(
                bind(nodes.attack_method, method=model, seed=seed), inputs,
                [f"{model}_ulira", f"{model}_ulira_scores", f"{model}_ulira_roc", f"{model}_shadow_trajectories"],
                name=f"attack_{model}", tags=tags))
    for model in ["original", "retrain", *methods]:
        inputs = {"model": f"{model}_model", "info": f"{model}_info", "splits": "splits",
                  "training_set": "training_set", "forget_set": "forget_set", "scenario": "params:scenario",
                  "runtime": RUNTIME}
        if model != "retrain":
            inputs.update(retrain_row="retrain_row", retrain_info="retrain_info")
        if with_ulira:
            inputs["ulira"] = f"{model}_ulira"
        evaluation_nodes.append(node(
            bind(nodes.evaluate_method, scenario_name=name, method=model, seed=seed), inputs,
            [f"{model}_row", f"{model}_mlflow"], name=f"evaluate_{model}",
            tags=all_tags if model in ("original", "retrain") else [f"method.{model}"]))
    template = Pipeline([
        node(bind(nodes.make_forget_set, seed=seed), ["splits", "training_set", "params:scenario"], "forget_set",
             name="make_forget_set", tags=all_tags),
        *method_nodes,
        *attack_nodes,
        *evaluation_nodes,
    ])
    training_set = seeded(scenario.get("training_set", "clean"), seed)
    return Pipeline(
        template, namespace=seeded(name, seed),
        inputs={"splits": "splits", "training_set": f"{training_set}.training_set",
                "original_model": f"{training_set}.original_model", "original_info": f"{training_set}.original_info"},
        parameters={"params:scenario": f"params:scenarios.{name}", "params:method_params": "params:method_params",
                    "params:training": "params:training", RUNTIME: RUNTIME,
                    **({"params:ulira": "params:ulira"} if with_ulira else {})},
        tags=["scenario"],
    )


def scenario_table_pipeline(name: str, models: list[str], seeds: list[int]) -> Pipeline:
    """The scenario's table: one row per model and seed."""
    rows = {f"{model}__{seed}": f"{seeded(name, seed)}.{model}_row" for seed in seeds for model in models}
    table = Pipeline([node(nodes.build_scenario_table, rows, "metrics", name="build_scenario_table",
                           tags=["reporting"])])
    return Pipeline(table, namespace=name, inputs=set(rows.values()))


def report_pipeline(scenario_names: list[str], attacked: dict[str, list[str]] | None = None,
                    seed: int = 1) -> Pipeline:
    """The run-wide table over the given scenarios (per seed), its mean ± std summary over seeds, the Markdown,
    a copy in MLflow, the `_mean`/`_std` metrics when there are several seeds, and the HTML report (with the U-LiRA
    ROC curves of `attacked` scenarios -> models, from the first seed)."""
    inputs = {"seeds": "params:seeds", **{name: f"{name}.metrics" for name in scenario_names}}
    scores = {f"{scenario}__{model}": f"{seeded(scenario, seed)}.{model}_ulira_scores"
              for scenario, models in (attacked or {}).items() for model in models}
    return Pipeline([
        node(nodes.build_run_table, inputs,
             ["run_table", "run_summary", "run_table_mlflow", "run_table_markdown", "run_summary_metrics"],
             name="build_run_table", tags=["reporting"]),
        node(nodes.build_run_report, {"table": "run_table", **scores}, "run_report", name="build_run_report",
             tags=["reporting"]),
    ])


def create_pipelines(scenarios: dict, training_sets: dict, methods: list[str], seeds: list[int],
                     ulira: dict | None = None, registry: dict | None = None) -> dict[str, Pipeline]:
    """`__default__` runs every scenario; each scenario is also its own pipeline (its training set included);
    `deletion_request` serves a deletion request against the registered serving model."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds}: give a non-empty list of distinct integers, e.g. [1] or [1, 2, 3]")
    all_tags = [f"method.{m}" for m in ["original", "retrain", *methods]]
    ingestion = Pipeline(ingestion_pipeline(), tags=all_tags)
    used_sets = sorted({s.get("training_set", "clean") for s in scenarios.values()})
    set_pipes = {ts: sum((training_set_pipeline(ts, seed, all_tags) for seed in seeds), Pipeline([]))
                 for ts in used_sets}
    ulira_on = bool((ulira or {}).get("enabled"))
    models = ["original", "retrain", *methods]
    scenario_pipes = {
        name: sum((scenario_pipeline(name, s, methods, seed, all_tags, ulira_on and s["application"] == "up")
                   for seed in seeds), Pipeline([])) + scenario_table_pipeline(name, models, seeds)
        for name, s in scenarios.items()
    }
    registration = Pipeline([])
    if (registry or {}).get("enabled") and "clean" in set_pipes:
        registration = registration_pipeline(seeds[0])
    attacked = {name: models for name, s in scenarios.items() if ulira_on and s["application"] == "up"}
    result = {
        "__default__": ingestion + sum(set_pipes.values(), Pipeline([])) + sum(scenario_pipes.values(), Pipeline([]))
        + report_pipeline(list(scenarios), attacked, seeds[0]) + registration,
        "deletion_request": deletion_request_pipeline(ingestion),
    }
    if registration:
        result["register"] = ingestion + training_set_pipeline("clean", seeds[0], all_tags) + registration
    for name, scenario in scenarios.items():
        result[name] = (ingestion + set_pipes[scenario.get("training_set", "clean")] + scenario_pipes[name]
                        + report_pipeline([name], {k: v for k, v in attacked.items() if k == name}, seeds[0]))
    return result
