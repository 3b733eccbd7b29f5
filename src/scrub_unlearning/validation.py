"""Validation of the user's scenario configuration, before any training (docs/design.md §7).

`check_config` runs when the pipelines are registered (names and structure, and - given `method_params` and
`training` - every method's parameters in every scenario against its declaration); `check_scenarios` runs right after
the splits exist (class ids and sizes against the real training split)."""

from __future__ import annotations

from .data import APPLICATIONS, Splits, build_forget_set, build_training_set
from .methods import METHODS, check_method_names, check_method_params, method_parameters

SCENARIO_KEYS = ("application", "training_set", "forget", "method_params")


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
    names = check_method_names(list(methods or []))
    if method_params is not None or training is not None:
        check_method_parameters(scenarios, ["retrain", *names], method_params or {}, training or {})


def check_method_parameters(scenarios: dict, names: list[str], method_params: dict, training: dict) -> None:
    """Each of `names`' parameters, as it would run in each scenario (`methods.method_parameters`: its block, the
    scenario's overrides, the training recipe's values where it takes them), checked against its declaration; a
    `method_params` block (top level or a scenario's) for an unregistered method is rejected too."""
    if not isinstance(method_params, dict):
        raise ValueError(f"'method_params' must be a mapping of method -> parameters, got {method_params!r}")
    blocks = {"method_params": method_params}
    blocks.update({f"scenario '{n}': method_params": (s.get("method_params") or {}) for n, s in scenarios.items()})
    for where, block in blocks.items():
        if not isinstance(block, dict):
            raise ValueError(f"{where} must be a mapping of method -> parameters, got {block!r}")
        unknown = sorted(str(m) for m in block if m not in METHODS)
        if unknown:
            raise ValueError(f"{where}: unknown method(s) {unknown}; known methods are {sorted(METHODS)}")
        for method, params in block.items():
            if METHODS[method].training_recipe:
                raise ValueError(f"{where}: {method} runs with the Original's recipe; set it under 'training'")
            if params is not None and not isinstance(params, dict):
                raise ValueError(f"{where}: {method}'s parameters must be a mapping of name -> value, got {params!r}")
    for name, scenario in scenarios.items():
        for method in names:
            try:
                params = method_parameters(method, method_params, scenario, training)
            except KeyError as missing:
                raise ValueError(f"scenario '{name}': {method} takes {missing} from the training recipe, which "
                                 f"has none") from None
            try:
                check_method_params(method, params)
            except ValueError as error:
                raise ValueError(f"scenario '{name}': {error}") from None


def check_scenarios(splits: Splits, scenarios: dict, training_sets: dict, seeds: list) -> None:
    """Build every training set and forget set once (cheap: ids only), so a bad class id or a forget size larger
    than its class fails here, naming the value, before anything trains."""
    for seed in seeds:
        built = {}
        for name, config in training_sets.items():
            try:
                built[name] = build_training_set(splits, name, config, seed)
            except ValueError as error:
                raise ValueError(f"training set '{name}': {error}") from None
        for name, scenario in scenarios.items():
            try:
                build_forget_set(built[scenario.get("training_set", "clean")], scenario, splits.num_classes, seed)
            except ValueError as error:
                raise ValueError(f"scenario '{name}': {error}") from None
