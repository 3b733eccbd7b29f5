"""Validation of the run's configuration, before any training (docs/design.md §7).

`check_run_config` checks every parameter a run reads - the training recipe, seeds, scenarios and methods, every
listed method's parameters in every scenario, U-LiRA, runtime, model, dataset and splits, the registry and the
deletion request with its gates - against its declaration (`parameters.Param`); errors name the parameter by its
dotted path (`training.lr`, `scenarios.rc.method_params.scrub.gamma`) and what it allows. The project hook runs it
(and `check_environment`) when a Kedro session starts, before any node. `check_config` is its scenario/method part
(the pipeline registry calls it too); `check_scenarios` runs right after the splits exist (class ids and sizes
against the real training split)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from .data import APPLICATIONS, Splits, build_forget_set, build_training_set
from .data.loaders import SUPPORTED_SOURCES
from .methods import METHODS, REFERENCES, check_method_names, get_method, method_parameters
from .models import ARCHITECTURES
from .parameters import REQUIRED, Param, check_parameters, check_value
from .pretraining import PARAMETERS as PRETRAINING_PARAMETERS
from .training import RECIPE_PARAMETERS

SCENARIO_KEYS = ("application", "training_set", "forget", "method_params")

TRAINING_PARAMETERS: dict[str, Param] = {
    **RECIPE_PARAMETERS,
    "epochs": replace(RECIPE_PARAMETERS["epochs"], low=1, help="passes over the training data (at least one: an "
                                                               "Original trained for none is not a model)"),
}
"""`training:`, the Original's recipe (also Retrain's and the shadows'): the recipe, with at least one epoch."""

SEEDS = Param("int_list", REQUIRED, low=1, help="a non-empty list of distinct positive integers")

MIN_SHADOWS = 3  # evaluation.shadows.plan_shadows: leave-one-shadow-out needs at least 3
ULIRA_PARAMETERS: dict[str, Param] = {
    "enabled": Param("bool", False, help="run U-LiRA on UP scenarios"),
    "num_shadows": Param("int", REQUIRED, low=MIN_SHADOWS, help="K shadow models (leave-one-shadow-out needs 3)"),
    "pool_size": Param("int", None, low=2, nullable=True, help="|P|; null = 2 x the forget size"),
    "bootstrap": Param("int", 1000, low=1, help="bootstrap resamples for the AUC's 95% interval"),
    "workers": Param("int", 0, low=0, help="0 = sequential; N = a pool of N processes"),
}
GATE_PARAMETERS: dict[str, Param] = {
    "enabled": Param("bool", False, help="gate promotion on the checks below"),
    "max_test_error_increase": Param("float", None, nullable=True, help="most test-error points the new version "
                                                                        "may lose; null = no gate"),
    "mia_band": Param("float_list", None, low=0.0, high=100.0, nullable=True,
                      help="[low, high], low < high: basic MIA accuracy (%) must stay inside; null = no gate"),
    "audit": Param("bool", True, help="the audit's gates (max_ulira_auc, max_flagged_excess), applied wherever "
                                      "the audit runs, whatever `enabled` says"),
    "max_ulira_auc": Param("float", None, low=0.0, high=1.0, nullable=True,
                           help="the audit's method-level U-LiRA: highest AUC allowed; null = no gate"),
    "max_flagged_excess": Param("float", None, low=0.0, high=1.0, nullable=True,
                                help="the served-model test: most the flagged share may exceed chance's when the "
                                     "excess is significant; null = no gate"),
    "flag_test_alpha": Param("float", 0.05, low=0.0, high=1.0, low_open=True,
                             help="level of the one-sided Fisher test that the excess is not chance"),
}
REQUEST_PARAMETERS: dict[str, Param] = {
    "path": Param("str", REQUIRED, help="the request CSV (request_id,id)"),
    "method": Param("choice", "scrub_r", choices=tuple(METHODS), help="the unlearning method"),
    "seed": Param("int", 1, low=1, help="seed of the unlearning run"),
    "ledger_path": Param("str", REQUIRED, help="the audit ledger (JSON lines)"),
    "ledger_key_file": Param("str", None, nullable=True, help="ledger key file when SCRUB_LEDGER_KEY is unset"),
}
REQUEST_BLOCKS = ("method_params", "gates")  # nested mappings of `deletion_request:`
SERVE_ORIGINAL = ("if_none", "always", "never")
MIN_AUDIT_SHADOWS = 4  # evaluation.request_audit: complementary pairs, leave-one-shadow-out
AUDIT_PARAMETERS: dict[str, Param] = {
    "enabled": Param("bool", True, help="train audit shadows at registration and audit every deletion request"),
    "num_shadows": Param("int", 16, low=MIN_AUDIT_SHADOWS, help="K shadows on complementary halves (even, >= 4)"),
    "seed": Param("int", 0, low=0, help="seed of the halves and the shadows' initialisations"),
    "workers": ULIRA_PARAMETERS["workers"],
    "bootstrap": ULIRA_PARAMETERS["bootstrap"],
    "alpha": Param("float", 0.05, low=0.0, high=1.0, low_open=True, help="per-example level of the served-model test"),
    "shadow_store": Param("str", None, nullable=True, help="folder of the audit shadows (needed when enabled)"),
    "log_to_mlflow": Param("bool", True, help="log the shadows' weights to MLflow beside the version"),
}
REGISTRY_PARAMETERS: dict[str, Param] = {
    "enabled": Param("bool", False, help="register the clean Original after a run"),
    "model_name": Param("str", REQUIRED, help="registered model name (no '/' or ':')"),
    "alias": Param("str", "serving", help="alias of the serving version (letters, digits, '_', '-')"),
    "serve_original": Param("choice", "if_none", choices=SERVE_ORIGINAL,
                            help="when the registered Original gets the alias"),
}
RUNTIME_PARAMETERS: dict[str, Param] = {
    "device": Param("str", "auto", help="auto, cpu, cuda, cuda:<index> or mps"),
    "num_threads": Param("int", None, low=1, nullable=True, help="torch intra-op threads; null = torch's default"),
    "deterministic": Param("bool", False, help="deterministic CUDA kernels"),
    "reuse_models": Param("bool", True, help="load unchanged models from the content-addressed store"),
}
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
MODEL_PARAMETERS: dict[str, Param] = {
    "architecture": Param("choice", REQUIRED, choices=ARCHITECTURES, help="the network"),
    "width": Param("float", 1.0, low=0.0, low_open=True, help="width factor (preact_resnet18, allcnn)"),
}
DATASET_PARAMETERS: dict[str, Param] = {
    "source": Param("choice", REQUIRED, choices=SUPPORTED_SOURCES, help="where the images come from"),
    "path": Param("str", None, nullable=True, help="the .npz file (source npz)"),
    "root": Param("str", "data/01_raw", help="download folder (source torchvision_cifar10)"),
    "download": Param("bool", True, help="download when missing (source torchvision_cifar10)"),
}
SPLITS_PARAMETERS: dict[str, Param] = {
    "val_fraction": Param("float", 0.2, low=0.0, high=1.0, low_open=True, help="validation part of each class"),
    "test_fraction": Param("float", 0.2, low=0.0, high=1.0, help="test part (sources without a test part)"),
    "split_seed": Param("int", 0, low=0, help="seed of the fixed splits"),
    "classes": Param("int_list", None, low=0, nullable=True, help="restrict to classes 0..k-1; null = all"),
    "train_per_class": Param("int", None, low=1, nullable=True, help="per-class counts instead of fractions"),
    "val_per_class": Param("int", None, low=1, nullable=True, help="with train_per_class"),
    "test_per_class": Param("int", None, low=1, nullable=True, help="with train_per_class"),
    "mean": Param("float_list", None, low=0.0, high=1.0, nullable=True, help="per-channel mean in [0, 1]"),
    "std": Param("float_list", None, low=0.0, low_open=True, nullable=True, help="per-channel std > 0"),
}

ORIGINAL_TUNABLE_PARAMETERS: dict[str, Param] = {**TRAINING_PARAMETERS, "width": MODEL_PARAMETERS["width"]}
"""What `tuning.space.original` may search: the Original's recipe and the model's width."""
TUNING_PARAMETERS: dict[str, Param] = {
    "n_trials": Param("int", REQUIRED, low=1, help="finished trials per study (every method gets the same)"),
    "seed": Param("int", REQUIRED, low=1, help="seed of the tuning forget sets and Original; never one of `seeds`"),
    "num_seeds": Param("int", 1, low=1, help="tuning seeds a trial is scored on: seed, seed+1, ... (each its own "
                                             "Original and forget set; the objective is combined over them)"),
    "max_utility_drop": Param("float", 5.0, low=0.0, help="utility budget: kept-class validation error points the "
                                                          "unlearned model may lose against the Original"),
    "sampler_seed": Param("int", 0, low=0, help="seed of the TPE sampler"),
    "pruning": Param("bool", True, help="stop trials whose per-epoch objective is worse than the median"),
}
TUNING_ORIGINAL_PARAMETERS: dict[str, Param] = {
    "n_trials": Param("int", None, low=1, nullable=True, help="trials of the Original's study; null = n_trials"),
}
TUNING_NESTED = ("methods", "applications", "original", "space")
METHOD_PARAMS_SOURCE = Param("choice", "config", choices=("config", "tuned"),
                             help="config: the YAML's method_params; tuned: conf/<env>/parameters_tuned.yml over it")

def _block(path: str, block, declared: Mapping[str, Param], nested: tuple[str, ...] = ()) -> dict:
    """A configuration block (`path` its dotted name) checked against `declared`; `nested` names sub-mappings that
    are checked by the caller. Returns the normalised scalars."""
    if block is None:
        block = {}
    if not isinstance(block, Mapping):
        raise ValueError(f"'{path}' must be a mapping of name -> value, got {block!r}")
    allowed = [*declared, *nested]
    unknown = sorted(str(name) for name in block if name not in allowed)
    if unknown:
        raise ValueError(f"{path}: unknown parameter(s) {unknown}; allowed are {allowed}")
    return check_parameters(path, {k: v for k, v in block.items() if k not in nested}, declared, paths=path)


def check_environment(conf_source: str | Path, env: str | None) -> None:
    """An explicit `--env` must name a folder of the configuration (`conf/<env>`); the error lists the ones there.
    Nothing to check without `--env`, or when the configuration is an archive."""
    conf = Path(conf_source)
    if not env or not conf.is_dir():
        return
    if not (conf / env).is_dir():
        available = sorted(p.name for p in conf.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise ValueError(f"unknown environment '{env}': there is no folder '{conf / env}'; the environments are "
                         f"{available} (--env <name>; without --env: base + local)")


def check_training(training) -> dict:
    """`training:` against `TRAINING_PARAMETERS`; errors name `training.<name>`."""
    return _block("training", training, TRAINING_PARAMETERS)


def check_seeds(seeds) -> list[int]:
    """`seeds:` is a non-empty list of distinct positive integers (each one is a namespace `seed_<n>`)."""
    try:
        checked = check_value("seeds", "seeds", seeds, SEEDS)
    except ValueError:
        checked = []
    if not checked or len(set(checked)) != len(checked):
        raise ValueError(f"parameter 'seeds' must be {SEEDS.help}, e.g. [1] or [1, 2, 3], got {seeds!r}")
    return checked


def check_ulira_config(ulira, scenarios: Mapping | None = None) -> dict:
    """`ulira:` against `ULIRA_PARAMETERS` (and `methods`: null or registered method names); with `scenarios`, a
    `pool_size` smaller than twice a UP scenario's forget size is rejected too (the pool's upper bound needs the
    data: `check_scenarios`)."""
    checked = _block("ulira", ulira, ULIRA_PARAMETERS, ("methods",))
    attacked = (ulira or {}).get("methods")
    if attacked is not None and (not isinstance(attacked, (list, tuple))
                                 or not all(isinstance(m, str) and m in METHODS for m in attacked)):
        raise ValueError(f"parameter 'ulira.methods' must be null (every listed method) or a list of registered "
                         f"methods {sorted(METHODS)}, got {attacked!r}")
    checked["methods"] = None if attacked is None else list(attacked)
    if checked["enabled"] and checked["pool_size"] is not None:
        for name, scenario in (scenarios or {}).items():
            size = ((scenario or {}).get("forget") or {}).get("size") if scenario.get("application") == "up" else None
            if isinstance(size, int) and not isinstance(size, bool) and checked["pool_size"] < 2 * size:
                raise ValueError(f"parameter 'ulira.pool_size' must be at least twice the forget size of scenario "
                                 f"'{name}' ({2 * size}) or null, got {checked['pool_size']}")
    return checked


def check_runtime(runtime) -> dict:
    """`runtime:`: a device torch can use here, threads, the deterministic switch."""
    checked = _block("runtime", runtime, RUNTIME_PARAMETERS)
    device = checked["device"]
    if not DEVICE_PATTERN.fullmatch(device):
        raise ValueError(f"parameter 'runtime.device' must be auto, cpu, cuda, cuda:<index> or mps, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"parameter 'runtime.device' is {device!r}, but torch sees no CUDA device here; use auto "
                         f"or cpu")
    return checked


def check_data_config(dataset, splits, model) -> None:
    """`dataset:`, `splits:` and `model:` against their declarations (files, class ids and whether the fractions
    leave a training part are checked when the data loads, before any training)."""
    checked = _block("dataset", dataset, DATASET_PARAMETERS)
    if checked["source"] == "npz" and not checked["path"]:
        raise ValueError("parameter 'dataset.path' must name the .npz file when dataset.source is 'npz', got "
                         f"{checked['path']!r}")
    checked = _block("splits", splits, SPLITS_PARAMETERS)
    if checked["train_per_class"] is not None:
        missing = [k for k in ("val_per_class", "test_per_class") if checked[k] is None]
        if missing:
            raise ValueError(f"splits: train_per_class needs {missing} too")
    _block("model", model, MODEL_PARAMETERS)


def check_pretraining_config(pretraining, splits=None) -> dict:
    """`pretraining:` against `pretraining.PARAMETERS`; when enabled, `recipe` is a training recipe
    (`pretraining.recipe.<name>`) and `classes` a non-empty list of distinct classes outside `splits.classes`."""
    checked = _block("pretraining", pretraining, PRETRAINING_PARAMETERS, ("recipe",))
    recipe = (pretraining or {}).get("recipe")
    if recipe is not None or checked["enabled"]:
        if not isinstance(recipe, Mapping):
            raise ValueError(f"parameter 'pretraining.recipe' must be a training recipe (a mapping like 'training:') "
                             f"when pretraining is enabled, got {recipe!r}")
        _block("pretraining.recipe", recipe, TRAINING_PARAMETERS)
    if checked["enabled"]:
        classes = checked["classes"]
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"parameter 'pretraining.classes' must be a non-empty list of distinct classes when "
                             f"pretraining is enabled, got {classes!r}")
        experiment = (splits or {}).get("classes")
        if not experiment:
            raise ValueError("pretraining needs 'splits.classes' (the experiment's classes): without it the experiment "
                             "uses every class, and none is left to pre-train on")
        shared = sorted(set(classes) & set(experiment))
        if shared:
            raise ValueError(f"parameter 'pretraining.classes' must not share classes with splits.classes (the "
                             f"experiment's), got {shared} in both")
    return checked


def check_registry_config(registry) -> dict:
    """`registry:` (read by the registration and the deletion-request pipelines): a model name and alias the MLflow
    Model Registry accepts, and when the registered Original serves."""
    checked = _block("registry", registry, REGISTRY_PARAMETERS, ("audit",))
    audit = _block("registry.audit", (registry or {}).get("audit"), AUDIT_PARAMETERS)
    if audit["enabled"] and not audit["shadow_store"]:
        raise ValueError(f"parameter 'registry.audit.shadow_store' must name a folder when the audit is enabled, got "
                         f"{audit['shadow_store']!r}")
    if audit["num_shadows"] % 2:
        raise ValueError(f"parameter 'registry.audit.num_shadows' must be even (complementary halves), got "
                         f"{audit['num_shadows']}")
    name, alias = checked["model_name"], checked["alias"]
    if "/" in name or ":" in name:
        raise ValueError(f"parameter 'registry.model_name' must not contain '/' or ':', got {name!r}")
    if (not re.fullmatch(r"[\w\-]{1,255}", alias) or alias.lower() == "latest"
            or re.fullmatch(r"[vV]\d+", alias)):
        raise ValueError(f"parameter 'registry.alias' must be letters, digits, '_' or '-', and neither 'latest' nor "
                         f"'v<number>' (MLflow reserves them), got {alias!r}")
    return checked


def check_gates(gates) -> dict:
    """`deletion_request.gates:`: `mia_band` is two numbers low < high in [0, 100]; the limits are numbers or null."""
    band = gates.get("mia_band") if isinstance(gates, Mapping) else None
    if band is not None:
        try:
            low_high = check_value("gates", "mia_band", band, GATE_PARAMETERS["mia_band"])
        except ValueError:
            low_high = []
        if len(low_high) != 2 or not low_high[0] < low_high[1]:
            raise ValueError(f"parameter 'deletion_request.gates.mia_band' must be two numbers [low, high] with "
                             f"0 <= low < high <= 100, or null, got {band!r}")
    return _block("deletion_request.gates", gates, GATE_PARAMETERS)


def check_deletion_request_config(request, method_params: Mapping, training: Mapping) -> dict:
    """`deletion_request:`: its scalars, its gates, and its method's parameters (the method it rewinds
    too) as a request runs them: `method_params.<method>` with `deletion_request.method_params` on top."""
    checked = _block("deletion_request", request, REQUEST_PARAMETERS, REQUEST_BLOCKS)
    request = request or {}
    check_gates(request.get("gates"))
    method = checked["method"]
    names = [m for m in (get_method(method).rewinds, method) if m]
    overrides = request.get("method_params") or {}
    _check_blocks_names({"method_params": method_params, "deletion_request.method_params": overrides})
    scenario = {"application": "up", "method_params": overrides}
    for name in names:
        _check_method_as_run(name, method_params, scenario, training, "deletion_request.method_params",
                             "deletion_request")
    return checked


def tuning_seeds(tuning: Mapping) -> list[int]:
    """The tuning seeds: `tuning.seed` and the `tuning.num_seeds - 1` after it (each its own Original and forget
    set; `check_tuning_config` keeps every one of them out of `seeds`)."""
    return [int(tuning["seed"]) + k for k in range(int(tuning.get("num_seeds") or 1))]


def check_tuning_config(tuning, scenarios: Mapping, methods: list, seeds: list[int]) -> dict:
    """`tuning:`: the budget and seeds, the methods and scenarios to tune (null: every listed method / every
    scenario), and a search space for each of them (`tuning.space.<method>`, and `tuning.space.original` for
    `tune_original`), every range checked against the parameter's declaration before anything trains."""
    from .tuning.space import parse_space  # tuning.space imports only parameters

    checked = _block("tuning", tuning, TUNING_PARAMETERS, TUNING_NESTED)
    chosen_seeds = tuning_seeds(checked)
    if set(chosen_seeds) & set(seeds):
        raise ValueError(f"parameter 'tuning.seed' must not be one of seeds {seeds} (the settings would be fit to "
                         f"the examples they are scored on), got {checked['seed']}"
                         + (f" with tuning.num_seeds {checked['num_seeds']}: tuning seeds {chosen_seeds}"
                            if checked["num_seeds"] > 1 else ""))
    tunable = [m for m in METHODS if METHODS[m].parameters]  # SCRUB+R has none: it rewinds SCRUB's trajectory
    chosen = tuning.get("methods")
    if chosen is None:
        chosen = [m for m in methods if m in tunable]
    if not isinstance(chosen, (list, tuple)) or not all(isinstance(m, str) and m in tunable for m in chosen):
        raise ValueError(f"parameter 'tuning.methods' must be null (every method in `methods` that has parameters) "
                         f"or a list of methods with declared parameters {tunable} (SCRUB+R rewinds SCRUB's "
                         f"trajectory, so tune scrub), got {chosen!r}")
    applications = tuning.get("applications")
    if applications is None:
        applications = list(scenarios)
    if not isinstance(applications, (list, tuple)) or not all(isinstance(a, str) and a in scenarios
                                                              for a in applications):
        raise ValueError(f"parameter 'tuning.applications' must be null (every scenario) or a list of scenarios "
                         f"{sorted(scenarios)}, got {applications!r}")
    original = _block("tuning.original", tuning.get("original"), TUNING_ORIGINAL_PARAMETERS)
    space = tuning.get("space") or {}
    if not isinstance(space, Mapping):
        raise ValueError(f"'tuning.space' must be a mapping of method -> parameter ranges, got {space!r}")
    unknown = sorted(str(k) for k in space if k != "original" and k not in METHODS)
    if unknown:
        raise ValueError(f"tuning.space: unknown method(s) {unknown}; allowed are {sorted(METHODS)} and 'original'")
    missing = [m for m in chosen if m not in space]
    if missing:
        raise ValueError(f"tuning.space has no search space for {missing}: declare one per tuned method "
                         f"(tuning.space.<method>.<parameter>: {{low, high}} or {{choices}})")
    for name, entry in space.items():
        declared = ORIGINAL_TUNABLE_PARAMETERS if name == "original" else get_method(name).parameters
        parse_space(name, entry, declared, f"tuning.space.{name}")
    return {**checked, "methods": list(chosen), "applications": list(applications), "original": original}


def check_run_config(parameters: Mapping) -> None:
    """Every parameter a run reads, checked against its declaration before anything runs (the project hook calls
    this when a session starts): one ValueError naming the parameter's dotted path, its value and what is
    allowed."""
    if not isinstance(parameters, Mapping):
        raise ValueError(f"the parameters must be a mapping, got {parameters!r}")
    training = check_training(parameters.get("training"))
    check_seeds(parameters.get("seeds"))
    methods = parameters.get("methods")
    if methods is None:
        methods = []
    scenarios = parameters.get("scenarios") or {}
    check_config(scenarios, parameters.get("training_sets") or {}, methods,
                 parameters.get("method_params") or {}, training)
    check_ulira_config(parameters.get("ulira"), scenarios)
    check_runtime(parameters.get("runtime"))
    check_data_config(parameters.get("dataset"), parameters.get("splits"), parameters.get("model"))
    if "pretraining" in parameters:
        check_pretraining_config(parameters["pretraining"], parameters.get("splits"))
    check_registry_config(parameters.get("registry"))
    check_deletion_request_config(parameters.get("deletion_request"), parameters.get("method_params") or {},
                                  training)
    check_value("method_params_source", "method_params_source", parameters.get("method_params_source", "config"),
                METHOD_PARAMS_SOURCE, path="method_params_source")
    if parameters.get("tuning") is not None:
        check_tuning_config(parameters["tuning"], scenarios, list(methods), check_seeds(parameters.get("seeds")))


def check_config(scenarios: dict, training_sets: dict, methods: list, method_params: dict | None = None,
                 training: dict | None = None) -> None:
    """Every scenario names a known application and a defined training set; methods are registered. With
    `method_params` or `training` given (the parameters' blocks), every listed method's merged parameters - and
    Retrain's, the training recipe - are checked against their declarations in every scenario
    (`check_method_parameters`)."""
    if not isinstance(scenarios, dict) or not scenarios:
        raise ValueError("parameters need a non-empty 'scenarios:' mapping of name -> scenario")
    if not isinstance(training_sets, dict) or not training_sets:
        raise ValueError("parameters need a non-empty 'training_sets:' mapping (e.g. 'clean: {}')")
    for name, scenario in scenarios.items():
        if not isinstance(scenario, dict):
            raise ValueError(f"scenario '{name}' must be a mapping with keys {list(SCENARIO_KEYS)}")
        unknown = sorted(set(scenario) - set(SCENARIO_KEYS))
        if unknown:
            raise ValueError(f"scenario '{name}': unknown key(s) {unknown}; allowed are {list(SCENARIO_KEYS)}")
        application = scenario.get("application")
        if application not in APPLICATIONS:
            raise ValueError(
                f"scenario '{name}': unknown scenario application '{application}'; allowed are {list(APPLICATIONS)}"
            )
        training_set = scenario.get("training_set", "clean")
        if training_set not in training_sets:
            raise ValueError(
                f"scenario '{name}': unknown training_set '{training_set}'; defined are {sorted(training_sets)}"
            )
        confused = bool((training_sets[training_set] or {}).get("confuse"))
        if (application == "rc") != confused:
            raise ValueError(
                f"scenario '{name}': application '{application}' needs a training set "
                f"{'with' if application == 'rc' else 'without'} 'confuse', and '{training_set}' "
                f"{'has none' if application == 'rc' else 'has one'}"
            )
        if "." in name or name in training_sets:
            raise ValueError(f"scenario name '{name}' must not contain '.' nor equal a training set name")
    if not isinstance(methods, (list, tuple)) or not all(isinstance(m, str) for m in methods):
        raise ValueError(f"parameter 'methods' must be a list of method names, e.g. [scrub] or [scrub, scrub_r]; "
                         f"known methods are {sorted(set(METHODS) | set(REFERENCES))}; got {methods!r}")
    names = check_method_names(list(methods or []))
    if method_params is not None or training is not None:
        check_method_parameters(scenarios, ["retrain", *names], method_params or {}, training or {})


def _check_blocks_names(blocks: Mapping[str, object]) -> None:
    """Each `method_params` block (dotted path -> block): a mapping of registered methods (not Retrain, which takes
    `training:`) to mappings of their declared parameter names."""
    for where, block in blocks.items():
        if not isinstance(block, dict):
            raise ValueError(f"'{where}' must be a mapping of method -> parameters, got {block!r}")
        unknown = sorted(str(m) for m in block if m not in METHODS)
        if unknown:
            raise ValueError(f"{where}: unknown method(s) {unknown}; known methods are {sorted(METHODS)}")
        for method, params in block.items():
            if METHODS[method].training_recipe:
                raise ValueError(f"{where}: {method} runs with the Original's recipe; set it under 'training'")
            if params is None:
                continue
            if not isinstance(params, dict):
                raise ValueError(f"'{where}.{method}' must be a mapping of name -> value, got {params!r}")
            declared = METHODS[method].parameters
            unknown = sorted(str(name) for name in params if name not in declared)
            if unknown:
                hint = " (it takes none)" if not declared else ""
                raise ValueError(f"{where}.{method}: unknown parameter(s) {unknown}; allowed are "
                                 f"{list(declared)}{hint}")


def _check_method_as_run(method: str, method_params: dict, scenario: dict, training: dict, override_path: str,
                         context: str) -> dict:
    """`method`'s parameters as they run with `scenario`'s overrides (found under `override_path`), checked against
    its declaration; a bad value is named by the path it came from."""
    registered = get_method(method)
    override = (scenario.get("method_params") or {}).get(method) or {}
    block = method_params.get(method) or {}

    def path(name: str) -> str:
        if registered.training_recipe:
            return f"training.{name}"
        raw = override.get(name, block.get(name))
        if name in registered.from_training and raw is None:
            return f"training.{name}"
        if name in override:
            return f"{override_path}.{method}.{name}"
        return f"method_params.{method}.{name}"

    try:
        params = method_parameters(method, method_params, scenario, training)
    except KeyError as missing:
        raise ValueError(f"{context}: {method} takes {missing} from the training recipe, which has none") from None
    return check_parameters(f"{context}: method_params.{method}", params, registered.parameters, paths=path)


def check_method_parameters(scenarios: dict, names: list[str], method_params: dict, training: dict) -> None:
    """Each of `names`' parameters, as it would run in each scenario (`methods.method_parameters`: its block, the
    scenario's overrides, the training recipe's values where it takes them), checked against its declaration; a
    `method_params` block (top level or a scenario's) for an unregistered method, or with an undeclared name, is
    rejected too. Errors name the value's dotted path (`scenarios.rc.method_params.scrub.gamma`)."""
    if not isinstance(method_params, dict):
        raise ValueError(f"'method_params' must be a mapping of method -> parameters, got {method_params!r}")
    blocks = {"method_params": method_params}
    blocks.update({f"scenarios.{n}.method_params": (s.get("method_params") or {}) for n, s in scenarios.items()})
    _check_blocks_names(blocks)
    for name, scenario in scenarios.items():
        for method in names:
            _check_method_as_run(method, method_params, scenario, training, f"scenarios.{name}.method_params",
                                 f"scenario '{name}'")


def check_scenarios(splits: Splits, scenarios: dict, training_sets: dict, seeds: list,
                    ulira: dict | None = None) -> None:
    """Build every training set and forget set once (cheap: ids only), so a bad class id or a forget size larger
    than its class fails here, naming the value, before anything trains. With `ulira` (enabled), every UP
    scenario's shadow pool must fit in the training examples of its forget classes."""
    for seed in seeds:
        built = {}
        for name, config in training_sets.items():
            try:
                built[name] = build_training_set(splits, name, config, seed)
            except ValueError as error:
                raise ValueError(f"training set '{name}': {error}") from None
        for name, scenario in scenarios.items():
            training_set = built[scenario.get("training_set", "clean")]
            try:
                table = build_forget_set(training_set, scenario, splits.num_classes, seed)
            except ValueError as error:
                raise ValueError(f"scenario '{name}': {error}") from None
            if (ulira or {}).get("enabled") and scenario["application"] == "up":
                classes = torch.as_tensor(sorted(set(table["true_label"].tolist())), dtype=torch.int64)
                candidates = int(torch.isin(training_set.true_labels, classes).sum())
                pool = int(ulira.get("pool_size") or 2 * len(table))
                if pool > candidates:
                    raise ValueError(f"scenario '{name}': the U-LiRA pool (ulira.pool_size, or twice the forget "
                                     f"size) of {pool} is larger than the {candidates} training examples of classes "
                                     f"{classes.tolist()}")
