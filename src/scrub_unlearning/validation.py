"""Validation of the user's scenario configuration, before any training (DESIGN §7).

`check_config` runs when the pipelines are registered (names and structure); `check_scenarios` runs right after
the splits exist (class ids and sizes against the real training split)."""

from __future__ import annotations

from .data import APPLICATIONS, Splits, build_forget_set, build_training_set
from .methods import check_method_names

SCENARIO_KEYS = ("application", "training_set", "forget", "method_params")


def check_config(scenarios: dict, training_sets: dict, methods: list) -> None:
    """Every scenario names a known application and a defined training set; methods are registered."""
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
    check_method_names(list(methods or []))


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
