"""Per scenario and seed, in namespace `<scenario>.seed_<n>`: forget set -> Retrain -> each method -> U-LiRA (UP
with `ulira.enabled`) -> one evaluation per model; then the scenario's table over seeds."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from ...methods import get_method, rewinders_of
from ..common import RUNTIME, bind, seeded
from . import nodes

SHARED = ["splits", "training_set", "forget_set", "params:scenario"]


def _tags(model: str, methods: list[str], all_tags: list[str]) -> list[str]:
    """Original and Retrain nodes carry every method's tag (every subset needs them); a method's nodes carry its
    own tag and its rewinders' (SCRUB's run belongs to `--tags method.scrub_r` too)."""
    if model in ("original", "retrain"):
        return all_tags
    return [f"method.{model}", *(f"method.{r}" for r in rewinders_of(model, methods))]


def attacked_models(methods: list[str], ulira_methods: list[str] | None) -> list[str]:
    """The models U-LiRA attacks: the Original, Retrain and the listed methods (`ulira.methods`; None: all), plus
    any method a listed one rewinds (SCRUB+R's shadows rewind SCRUB's)."""
    chosen = list(methods) if ulira_methods is None else [m for m in methods if m in ulira_methods]
    needed = {get_method(m).rewinds for m in chosen} - {None}
    return ["original", "retrain", *[m for m in methods if m in chosen or m in needed]]


def create_pipeline(name: str, scenario: dict, methods: list[str], seed: int, all_tags: list[str],
                    with_ulira: bool = False, ulira_methods: list[str] | None = None) -> Pipeline:
    """Forget set, Retrain, every method, U-LiRA when asked (against `attacked_models`), and one evaluation per
    model for one seed."""
    models = ["original", "retrain", *methods]
    attacked = attacked_models(methods, ulira_methods) if with_ulira else []
    template_nodes = [node(bind(nodes.make_forget_set, seed=seed), ["splits", "training_set", "params:scenario"],
                           "forget_set", name="make_forget_set", tags=all_tags)]
    for method in ["retrain", *methods]:
        registered = get_method(method)
        hand_over = bool(rewinders_of(method, methods))
        inputs = ["original_model", *SHARED, "params:method_params", "params:training", RUNTIME, "model_store"]
        if registered.rewinds:
            inputs.append(f"{registered.rewinds}_result")
        outputs = [f"{method}_model", f"{method}_info"] + ([f"{method}_result"] if hand_over else [])
        template_nodes.append(node(bind(nodes.run_method, method=method, seed=seed, hand_over=hand_over),
                                   inputs, outputs, name=f"run_{method}", tags=_tags(method, methods, all_tags)))
    if with_ulira:
        template_nodes.append(node(
            bind(nodes.train_shadow_models, seed=seed),
            ["original_model", *SHARED, "params:ulira", "params:training", RUNTIME, "shadow_store"],
            ["shadows", "shadow_manifest"], name="train_shadow_models", tags=all_tags))
        for model in attacked:
            rewinds = get_method(model).rewinds if model != "original" else None
            hand_over = model != "original" and bool(rewinders_of(model, attacked))
            inputs = {"shadows": "shadows", "splits": "splits", "training_set": "training_set",
                      "forget_set": "forget_set", "scenario": "params:scenario",
                      "method_params": "params:method_params", "training": "params:training",
                      "ulira": "params:ulira", "runtime": RUNTIME, "store": "model_store"}
            if model != "retrain":  # KLoM and the AUC gap's paired interval compare with Retrain's shadows
                inputs["reference_scores"] = "retrain_ulira_scores"
            if rewinds:
                inputs.update(rewound=f"{rewinds}_shadow_results", rewound_scores=f"{rewinds}_ulira_scores")
            outputs = [f"{model}_ulira", f"{model}_ulira_scores"]
            if hand_over:
                outputs.append(f"{model}_shadow_results")
            template_nodes.append(node(bind(nodes.attack_method, method=model, seed=seed, hand_over=hand_over),
                                       inputs, outputs, name=f"attack_{model}", tags=_tags(model, methods, all_tags)))
    if with_ulira:
        template_nodes.append(node(nodes.collect_ulira_scores, {m: f"{m}_ulira_scores" for m in attacked},
                                   "ulira_scores", name="collect_ulira_scores", tags=["reporting"]))
    for model in models:
        inputs = {"model": f"{model}_model", "info": f"{model}_info", "splits": "splits",
                  "training_set": "training_set", "forget_set": "forget_set", "scenario": "params:scenario",
                  "runtime": RUNTIME}
        if model != "retrain":
            inputs.update(retrain_row="retrain_row", retrain_info="retrain_info")
        if model in attacked:
            inputs["ulira"] = f"{model}_ulira"
        template_nodes.append(node(
            bind(nodes.evaluate_method, scenario_name=name, method=model, seed=seed), inputs,
            f"{model}_row", name=f"evaluate_{model}",
            tags=all_tags if model in ("original", "retrain") else [f"method.{model}"]))
    training_set = seeded(scenario.get("training_set", "clean"), seed)
    return Pipeline(
        Pipeline(template_nodes), namespace=seeded(name, seed),
        inputs={"splits": "splits", "model_store": "model_store", "training_set": f"{training_set}.training_set",
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
