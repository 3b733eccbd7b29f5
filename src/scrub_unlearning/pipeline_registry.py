"""Project pipelines, assembled from the stages in `pipelines/` and built from the `scenarios:`, `training_sets:`,
`methods:` and `seeds:` parameters (docs/design.md §4):

    raw -> splits -> per seed and training set: Original -> per seed and scenario: forget set -> Retrain
    -> each method -> metrics -> scenario table (all seeds) -> run-wide table and summary (+ MLflow)

`register_pipelines()` takes no arguments and cannot see `--env`/`--params`, so `ScenarioRegistryHook` hands it
the session's config loader first. Without a session (e.g. a bare import), the `base` + `local` configuration of
the current project is read.
"""

from __future__ import annotations

from pathlib import Path

from kedro.pipeline import Pipeline

from .methods import METHODS, REFERENCES
from .pipelines import deletion_request, ingestion, originals, registry, scenarios, summary, tuning, verify_ledger
from .pipelines.common import seeded as seeded_name
from .validation import check_config, tuning_seeds

_config_loader = None


def use_config_loader(config_loader) -> None:
    """Remember the session's config loader (called by the project hook)."""
    global _config_loader
    _config_loader = config_loader


def _parameters() -> dict:
    loader = _config_loader
    if loader is None:
        from .settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS, project_root

        loader = CONFIG_LOADER_CLASS(str(Path(project_root()) / "conf"), **CONFIG_LOADER_ARGS)
    return loader["parameters"]


def _concat(pipelines) -> Pipeline:
    return sum(pipelines, Pipeline([]))


def create_pipelines(scenario_configs: dict, training_sets: dict, methods: list[str], seeds: list[int],
                     ulira: dict | None = None, registry_config: dict | None = None,
                     tuning_config: dict | None = None) -> dict[str, Pipeline]:
    """`__default__` runs every scenario; each scenario is also its own pipeline (its training set included);
    `register` trains and registers the clean Original; `deletion_request` serves a deletion request against the
    registered serving model; with a `tuning:` block, `tune` tunes the methods and `tune_original` the Original's
    recipe on the tuning seed (docs/design.md §9)."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds}: give a non-empty list of distinct integers, e.g. [1] or [1, 2, 3]")
    all_tags = [f"method.{m}" for m in [*REFERENCES, *methods]]
    ingest = Pipeline(ingestion.create_pipeline() + originals.create_pretraining_pipeline(), tags=all_tags)
    used_sets = sorted({s.get("training_set", "clean") for s in scenario_configs.values()})
    set_pipes = {ts: _concat(originals.create_pipeline(ts, seed, all_tags) for seed in seeds) for ts in used_sets}
    ulira_on = bool((ulira or {}).get("enabled"))
    models = [*REFERENCES, *methods]
    scenario_pipes = {
        name: _concat(scenarios.create_pipeline(name, s, methods, seed, all_tags,
                                                ulira_on and s["application"] == "up",
                                                (ulira or {}).get("methods")) for seed in seeds)
        + scenarios.scenario_table_pipeline(name, models, seeds)
        for name, s in scenario_configs.items()
    }
    registration = Pipeline([])
    if (registry_config or {}).get("enabled") and "clean" in set_pipes:
        registration = registry.create_pipeline(seeds[0])
    attacked = [name for name, s in scenario_configs.items() if ulira_on and s["application"] == "up"]
    result = {
        "__default__": ingest + _concat(set_pipes.values()) + _concat(scenario_pipes.values())
        + summary.create_pipeline(list(scenario_configs), attacked, seeds[0]) + registration,
        "deletion_request": deletion_request.create_pipeline(
            ingestion.create_pipeline() + Pipeline(originals.create_pretraining_pipeline(), tags=["ingestion"])),
        "verify_ledger": verify_ledger.create_pipeline(),
    }
    if registration:
        result["register"] = ingest + originals.create_pipeline("clean", seeds[0], all_tags) + registration
    if tuning_config:
        result.update(_tuning_pipelines(scenario_configs, methods, tuning_config, ingest, all_tags))
    for name, scenario in scenario_configs.items():
        result[name] = (ingest + set_pipes[scenario.get("training_set", "clean")] + scenario_pipes[name]
                        + summary.create_pipeline([name], [a for a in attacked if a == name], seeds[0]))
    return result


def _tuning_pipelines(scenario_configs: dict, methods: list[str], tuning_config: dict, ingest: Pipeline,
                      all_tags: list[str]) -> dict[str, Pipeline]:
    seeds = tuning_seeds(tuning_config)
    seed = seeds[0]
    tuned = {name: scenario_configs[name] for name in (tuning_config.get("applications") or scenario_configs)}
    tuned_methods = [m for m in (tuning_config.get("methods") or methods)
                     if m in METHODS and METHODS[m].parameters]  # as validation.check_tuning_config
    training_sets = sorted({s.get("training_set", "clean") for s in tuned.values()})
    originals_of_seed = _concat(originals.create_pipeline(ts, s, all_tags) for ts in training_sets for s in seeds)
    clean_set = originals.create_pipeline("clean", seed, all_tags).to_outputs(f"{seeded_name('clean', seed)}"
                                                                               ".training_set")
    return {"tune": ingest + originals_of_seed + tuning.create_pipeline(tuned, tuned_methods, seeds),
            "tune_original": ingest + clean_set + tuning.create_original_pipeline(seed)}


def register_pipelines() -> dict[str, Pipeline]:
    parameters = _parameters()
    scenario_configs = parameters.get("scenarios") or {}
    training_sets = parameters.get("training_sets") or {}
    methods = list(parameters.get("methods") or [])
    check_config(scenario_configs, training_sets, methods, parameters.get("method_params") or {},
                 parameters.get("training") or {})
    methods = [m for m in methods if m not in REFERENCES]
    return create_pipelines(scenario_configs, training_sets, methods, list(parameters.get("seeds") or [1]),
                            parameters.get("ulira"), parameters.get("registry"), parameters.get("tuning"))
