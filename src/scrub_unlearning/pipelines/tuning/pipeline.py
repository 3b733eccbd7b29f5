"""`tune`: per tuned scenario, the tuning forget sets (one per tuning seed: `tuning.seed` and the
`tuning.num_seeds - 1` after it, never one of `seeds`), each from the Original of its seed, one study per tuned
method scored on all of them, then the tuned settings file. `tune_original`: one study over the Original's recipe on
`tuning.seed`. Namespaces `tune_<scenario>.seed_<tuning seed>` (a study's result under the first); the training sets
and Originals of the tuning seeds come from the originals stage (content-addressed, so reused)."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from ..common import RUNTIME, bind, seeded
from ..scenarios import nodes as scenario_nodes
from . import nodes


def create_pipeline(scenarios: dict[str, dict], methods: list[str], seeds: list[int]) -> Pipeline:
    """The studies of `methods` on `scenarios` (name -> scenario config), each scored on the tuning seeds `seeds`
    (one forget set per seed, from that seed's Original)."""
    parts, results = [], []
    for name, scenario in scenarios.items():
        per_seed = []
        for seed in seeds:
            training = seeded(scenario.get("training_set", "clean"), seed)
            forget_set = f"{seeded(f'tune_{name}', seed)}.forget_set"
            parts.append(node(bind(scenario_nodes.make_forget_set, seed=seed),
                              ["splits", f"{training}.training_set", f"params:scenarios.{name}"],
                              forget_set, name=f"{seeded(f'tune_{name}', seed)}.make_forget_set"))
            per_seed += [f"{training}.original_model", f"{training}.training_set", forget_set]
        namespace = seeded(f"tune_{name}", seeds[0])
        for method in methods:
            results.append(f"{namespace}.{method}_tuned")
            parts.append(node(
                bind(nodes.tune_method, scenario_name=name, method=method, seeds=list(seeds)),
                ["splits", f"params:scenarios.{name}", "params:method_params", "params:training", RUNTIME,
                 "params:tuning", "tuning_storage", "model_store", *per_seed],
                results[-1], name=f"{namespace}.tune_{method}", tags=["tuning", f"method.{method}"]))
    parts.append(node(nodes.write_tuned_settings, ["tuned_settings_before", *results], "tuned_settings",
                      name="write_tuned_settings", tags=["tuning"]))
    return Pipeline(parts, tags=["tuning"])


def create_original_pipeline(seed: int) -> Pipeline:
    """The study of the Original's recipe on the clean training set of the tuning seed."""
    training = seeded("clean", seed)
    return Pipeline([
        node(bind(nodes.tune_original, seed=seed),
             ["splits", f"{training}.training_set", "params:model", "params:training", RUNTIME, "params:tuning",
              "tuning_storage"], "tune_original.original_tuned", name="tune_original"),
        node(nodes.write_tuned_settings, ["tuned_settings_before", "tune_original.original_tuned"],
             "tuned_settings", name="write_tuned_settings"),
    ], tags=["tuning"])
