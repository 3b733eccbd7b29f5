"""`tune`: per tuned scenario, the tuning forget set (drawn with `tuning.seed`, never one of `seeds`) from the
Original of that seed, one study per tuned method, then the tuned settings file. `tune_original`: one study over the
Original's recipe. Namespaces `tune_<scenario>.seed_<tuning seed>`; the training sets and Originals of the tuning
seed come from the originals stage (content-addressed, so reused)."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from ..common import RUNTIME, bind, seeded
from ..scenarios import nodes as scenario_nodes
from . import nodes


def create_pipeline(scenarios: dict[str, dict], methods: list[str], seed: int) -> Pipeline:
    """The studies of `methods` on `scenarios` (name -> scenario config) for the tuning seed `seed`."""
    parts, results = [], []
    for name, scenario in scenarios.items():
        training = seeded(scenario.get("training_set", "clean"), seed)
        namespace = seeded(f"tune_{name}", seed)
        parts.append(node(bind(scenario_nodes.make_forget_set, seed=seed),
                          ["splits", f"{training}.training_set", f"params:scenarios.{name}"],
                          f"{namespace}.forget_set", name=f"{namespace}.make_forget_set"))
        for method in methods:
            results.append(f"{namespace}.{method}_tuned")
            parts.append(node(
                bind(nodes.tune_method, scenario_name=name, method=method, seed=seed),
                [f"{training}.original_model", "splits", f"{training}.training_set", f"{namespace}.forget_set",
                 f"params:scenarios.{name}", "params:method_params", "params:training", RUNTIME, "params:tuning",
                 "tuning_storage", "model_store"],
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
