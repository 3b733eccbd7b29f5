"""The DAG, built from the scenarios written as parameters (DESIGN §4):

    raw -> splits -> per training set: Original -> per scenario: forget set -> Retrain -> each method -> metrics
    -> scenario table -> run-wide table (+ MLflow metrics)

Training sets are namespaces (`clean`, `rc_confused`) so scenarios on the same data share one Original; each
scenario is a namespace whose `original_*` inputs point at its training set's.
"""

from __future__ import annotations

from functools import partial

from kedro.pipeline import Pipeline, node

from ..methods import get_method
from . import nodes

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


def training_set_pipeline(name: str, seed: int, all_tags: list[str]) -> Pipeline:
    """The training set `name` and its Original, in namespace `name`."""
    template = Pipeline([
        node(bind(nodes.prepare_training_set, name=name, seed=seed), ["splits", "params:training_set"],
             ["training_set", "training_labels"], name="prepare_training_set", tags=all_tags),
        node(bind(nodes.train_original, seed=seed),
             ["splits", "training_set", "params:model", "params:training", RUNTIME],
             ["original_model", "original_info"], name="train_original", tags=all_tags),
    ])
    return Pipeline(
        template, namespace=name, inputs={"splits"},
        parameters={"params:training_set": f"params:training_sets.{name}", "params:model": "params:model",
                    "params:training": "params:training", RUNTIME: RUNTIME},
        tags=["training"],
    )


def scenario_pipeline(name: str, scenario: dict, methods: list[str], seed: int, all_tags: list[str]) -> Pipeline:
    """Forget set, Retrain, every method, one evaluation per model and the scenario's table, in namespace `name`.

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
    for model in ["original", "retrain", *methods]:
        inputs = [f"{model}_model", f"{model}_info", "splits", "training_set", "forget_set", "params:scenario",
                  RUNTIME]
        if model != "retrain":
            inputs += ["retrain_row", "retrain_info"]
        evaluation_nodes.append(node(
            bind(nodes.evaluate_method, scenario_name=name, method=model, seed=seed), inputs,
            [f"{model}_row", f"{model}_mlflow"], name=f"evaluate_{model}",
            tags=all_tags if model in ("original", "retrain") else [f"method.{model}"]))
    template = Pipeline([
        node(bind(nodes.make_forget_set, seed=seed), ["splits", "training_set", "params:scenario"], "forget_set",
             name="make_forget_set", tags=all_tags),
        *method_nodes,
        *evaluation_nodes,
        node(nodes.build_scenario_table, {m: f"{m}_row" for m in ["original", "retrain", *methods]}, "metrics",
             name="build_scenario_table", tags=["reporting"]),
    ])
    training_set = scenario.get("training_set", "clean")
    return Pipeline(
        template, namespace=name,
        inputs={"splits": "splits", "training_set": f"{training_set}.training_set",
                "original_model": f"{training_set}.original_model", "original_info": f"{training_set}.original_info"},
        parameters={"params:scenario": f"params:scenarios.{name}", "params:method_params": "params:method_params",
                    "params:training": "params:training", RUNTIME: RUNTIME},
        tags=["scenario"],
    )


def report_pipeline(scenario_names: list[str]) -> Pipeline:
    """The run-wide table over the given scenarios: versioned CSV, Markdown, and a copy in MLflow."""
    inputs = {"seeds": "params:seeds", **{name: f"{name}.metrics" for name in scenario_names}}
    return Pipeline([
        node(nodes.build_run_table, inputs, ["run_table", "run_table_mlflow", "run_table_markdown"],
             name="build_run_table", tags=["reporting"]),
    ])


def create_pipelines(scenarios: dict, training_sets: dict, methods: list[str], seeds: list[int]) -> dict[str, Pipeline]:
    """`__default__` runs every scenario; each scenario is also its own pipeline (its training set included)."""
    if len(seeds) != 1:
        raise ValueError(f"seeds {seeds}: this version runs exactly one seed per run (e.g. 'seeds: [1]')")
    seed = int(seeds[0])
    all_tags = [f"method.{m}" for m in ["original", "retrain", *methods]]
    ingestion = Pipeline(ingestion_pipeline(), tags=all_tags)
    used_sets = sorted({s.get("training_set", "clean") for s in scenarios.values()})
    set_pipes = {ts: training_set_pipeline(ts, seed, all_tags) for ts in used_sets}
    scenario_pipes = {name: scenario_pipeline(name, s, methods, seed, all_tags) for name, s in scenarios.items()}
    result = {
        "__default__": ingestion + sum(set_pipes.values(), Pipeline([])) + sum(scenario_pipes.values(), Pipeline([]))
        + report_pipeline(list(scenarios)),
    }
    for name, scenario in scenarios.items():
        result[name] = (ingestion + set_pipes[scenario.get("training_set", "clean")] + scenario_pipes[name]
                        + report_pipeline([name]))
    return result
