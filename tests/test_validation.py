"""Bad input fails before training, with an error naming the bad value and what is allowed (docs/design.md §7)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from conftest import copy_project, kedro

from benchmarks.config import load_parameters
from scrub_unlearning import validation
from scrub_unlearning.data import APPLICATIONS, load_digits_dataset, make_splits
from scrub_unlearning.methods import METHODS, REFERENCES

TRAINING_SETS = {"clean": {}, "rc_confused": {"confuse": {"classes": [3, 8], "size": 40}}}
SCENARIOS = {
    "rb_class": {"application": "rb_class", "training_set": "clean", "forget": {"class_id": 5}},
    "rb_selective": {
        "application": "rb_selective", "training_set": "clean", "forget": {"class_id": 5, "size": 30},
    },
    "rc": {"application": "rc", "training_set": "rc_confused", "method_params": {"scrub": {"gamma": 99.0}}},
    "up": {"application": "up", "training_set": "clean", "forget": {"class_id": 5, "size": 30}},
}


@pytest.fixture(scope="module")
def splits():
    return make_splits(load_digits_dataset(), {"val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0})


def _scenarios(**changes):
    scenarios = copy.deepcopy(SCENARIOS)
    for name, scenario in changes.items():
        scenarios[name] = scenario
    return scenarios


def _config_error(scenarios, training_sets=TRAINING_SETS, methods=("scrub",)) -> str:
    with pytest.raises(ValueError) as info:
        validation.check_config(scenarios, copy.deepcopy(training_sets), list(methods))
    return str(info.value)


# --- check_config ---


def test_base_config_passes():
    assert validation.check_config(copy.deepcopy(SCENARIOS), copy.deepcopy(TRAINING_SETS), ["scrub"]) is None
    assert validation.check_config(copy.deepcopy(SCENARIOS), copy.deepcopy(TRAINING_SETS),
                                   ["original", "retrain", "scrub"]) is None


def test_unknown_application_named_with_allowed():
    message = _config_error(_scenarios(bad={"application": "rb_everything", "forget": {"class_id": 1}}))
    assert "'bad'" in message
    assert "'rb_everything'" in message
    for application in APPLICATIONS:
        assert application in message


def test_missing_application_rejected():
    message = _config_error(_scenarios(bad={"training_set": "clean", "forget": {"class_id": 1}}))
    assert "'bad'" in message and "None" in message


def test_unknown_training_set_named_with_defined_ones():
    message = _config_error(_scenarios(
        bad={"application": "up", "training_set": "dirty", "forget": {"class_id": 1, "size": 5}}
    ))
    assert "'dirty'" in message
    assert "clean" in message and "rc_confused" in message


def test_rc_scenario_on_training_set_without_confuse_rejected():
    message = _config_error(_scenarios(rc={"application": "rc", "training_set": "clean"}))
    assert "'rc'" in message and "'clean'" in message and "confuse" in message


def test_non_rc_scenario_on_confused_training_set_rejected():
    message = _config_error(_scenarios(
        bad={"application": "up", "training_set": "rc_confused", "forget": {"class_id": 1, "size": 5}}
    ))
    assert "'rc_confused'" in message and "confuse" in message


def test_unknown_method_lists_known_methods():
    message = _config_error(copy.deepcopy(SCENARIOS), methods=("scrub", "magic_eraser"))
    assert "magic_eraser" in message
    for name in set(METHODS) | set(REFERENCES):
        assert name in message


def test_unknown_scenario_key_named_with_allowed():
    message = _config_error(_scenarios(
        up={"application": "up", "training_set": "clean", "forgett": {"class_id": 5, "size": 30}}
    ))
    assert "'up'" in message and "forgett" in message
    for key in validation.SCENARIO_KEYS:
        assert key in message


def test_empty_or_malformed_config_rejected():
    with pytest.raises(ValueError) as info:
        validation.check_config({}, copy.deepcopy(TRAINING_SETS), ["scrub"])
    assert "scenarios" in str(info.value)
    with pytest.raises(ValueError) as info:
        validation.check_config(copy.deepcopy(SCENARIOS), {}, ["scrub"])
    assert "training_sets" in str(info.value)
    with pytest.raises(ValueError) as info:
        validation.check_config(_scenarios(up="up"), copy.deepcopy(TRAINING_SETS), ["scrub"])
    assert "'up'" in str(info.value) and "mapping" in str(info.value)


def test_method_parameters_checked_in_every_scenario_when_given():
    training = {"optimizer": "sgd", "lr": 0.1, "epochs": 3, "batch_size": 64, "schedule": "cosine"}
    method_params = {"scrub": dict(optimizer="sgd", lr=0.01, weight_decay=5e-4, gamma=1.0, alpha=0.5,
                                   temperature=2.0, msteps=2, epochs=3, lr_decay_epochs=[2], retain_batch=32,
                                   forget_batch=32),
                     "eu_k": {"epochs": None}}
    methods = ["scrub", "scrub_r", "eu_k", "finetune"]
    assert validation.check_config(copy.deepcopy(SCENARIOS), copy.deepcopy(TRAINING_SETS), methods,
                                   copy.deepcopy(method_params), dict(training)) is None

    def error(method_params=method_params, training=training, scenarios=SCENARIOS, methods=methods) -> str:
        with pytest.raises(ValueError) as info:
            validation.check_config(copy.deepcopy(scenarios), copy.deepcopy(TRAINING_SETS), methods,
                                    copy.deepcopy(method_params), dict(training))
        return str(info.value)

    # a scenario's override out of range is named by its dotted path, with the value and what is allowed
    message = error(scenarios=_scenarios(rc={**SCENARIOS["rc"], "method_params": {"scrub": {"gamma": -1.0}}}))
    assert "'scenarios.rc.method_params.scrub.gamma' must be >= 0, got -1.0" in message
    # an undeclared parameter in a method's block, with the allowed names
    message = error(method_params={**method_params, "finetune": {"lerning_rate": 0.1}})
    assert "method_params.finetune" in message and "lerning_rate" in message and "allowed are" in message
    # ...and in a scenario's override
    message = error(scenarios=_scenarios(up={**SCENARIOS["up"], "method_params": {"scrub": {"lr_": 1.0}}}))
    assert "scenarios.up.method_params.scrub" in message and "lr_" in message
    # the training recipe is Retrain's parameters
    message = error(training={**training, "schedule": "linear"})
    assert "'training.schedule'" in message and "'linear'" in message
    # a required parameter left out
    message = error(method_params={"scrub": {k: v for k, v in method_params["scrub"].items() if k != "lr"}})
    assert "scrub" in message and "missing" in message and "lr" in message
    # a block for an unregistered method, at the top or in a scenario
    assert "scrubb" in error(method_params={**method_params, "scrubb": {}})
    message = error(scenarios=_scenarios(up={**SCENARIOS["up"], "method_params": {"neggrad_minus": {}}}))
    assert "scenarios.up.method_params" in message and "neggrad_minus" in message
    # SCRUB+R takes none
    assert "scrub_r" in error(method_params={**method_params, "scrub_r": {"epochs": 2}})


def test_method_parameters_not_checked_without_them():
    """Existing callers (no method_params, no training) check names and structure only."""
    assert validation.check_config(copy.deepcopy(SCENARIOS), copy.deepcopy(TRAINING_SETS), ["scrub"]) is None


# --- check_scenarios ---


def test_base_scenarios_pass_on_digits(splits):
    scenarios, training_sets = copy.deepcopy(SCENARIOS), copy.deepcopy(TRAINING_SETS)
    assert validation.check_scenarios(splits, scenarios, training_sets, [1, 2]) is None


@pytest.mark.parametrize("application", ["rb_class", "rb_selective", "up"])
def test_class_id_out_of_range_names_it(splits, application):
    forget = {"class_id": 12} if application == "rb_class" else {"class_id": 12, "size": 30}
    scenarios = _scenarios(bad={"application": application, "training_set": "clean", "forget": forget})
    with pytest.raises(ValueError) as info:
        validation.check_scenarios(splits, scenarios, copy.deepcopy(TRAINING_SETS), [1])
    message = str(info.value)
    assert "'bad'" in message and "12" in message and "0..9" in message


@pytest.mark.parametrize("application", ["rb_selective", "up"])
def test_forget_size_larger_than_class_names_it(splits, application):
    scenarios = _scenarios(bad={"application": application, "training_set": "clean",
                                "forget": {"class_id": 5, "size": 500}})
    with pytest.raises(ValueError) as info:
        validation.check_scenarios(splits, scenarios, copy.deepcopy(TRAINING_SETS), [1])
    message = str(info.value)
    assert "'bad'" in message and "500" in message and "class 5" in message


def test_confuse_size_larger_than_a_class_rejected(splits):
    training_sets = {"clean": {}, "rc_confused": {"confuse": {"classes": [3, 8], "size": 400}}}
    with pytest.raises(ValueError) as info:
        validation.check_scenarios(splits, copy.deepcopy(SCENARIOS), training_sets, [1])
    message = str(info.value)
    assert "'rc_confused'" in message and "200" in message and "class 3" in message


def test_confuse_class_out_of_range_rejected(splits):
    training_sets = {"clean": {}, "rc_confused": {"confuse": {"classes": [3, 10], "size": 40}}}
    with pytest.raises(ValueError) as info:
        validation.check_scenarios(splits, copy.deepcopy(SCENARIOS), training_sets, [1])
    message = str(info.value)
    assert "'rc_confused'" in message and "10" in message and "0..9" in message


# --- check_run_config: every parameter a run reads, named by its dotted path, before anything trains ---

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def base_parameters():
    return load_parameters("base", CONF.parent)


def _with(parameters: dict, dotted: str, value) -> dict:
    changed = copy.deepcopy(parameters)
    *parents, last = dotted.split(".")
    node = changed
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return changed


def _run_config_error(parameters: dict) -> str:
    with pytest.raises(ValueError) as info:
        validation.check_run_config(parameters)
    return str(info.value)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("dotted, value, allowed", [
    # the training recipe: today -1 trains an Original for no epoch and its row says ok
    ("training.epochs", -1, ">= 1"),
    ("training.epochs", 0, ">= 1"),
    ("training.epochs", "ten", "an integer"),
    ("training.epochs", True, "an integer"),
    ("training.lr", "abc", "a finite number"),
    ("training.lr", NAN, "a finite number"),
    ("training.lr", INF, "a finite number"),
    ("training.lr", 0, "> 0"),
    ("training.batch_size", 0, ">= 1"),
    ("training.optimizer", "rmsprop", "one of ['sgd', 'adam']"),
    ("training.momentum", 1.5, "in [0, 1]"),
    ("training.lr_decay_epochs", [0], "each >= 1"),
    # every listed method's parameters, in the block and in a scenario's overrides: NaN, inf, bools are not numbers
    ("method_params.scrub.lr", NAN, "a finite number"),
    ("method_params.scrub.lr", -INF, "a finite number"),
    ("method_params.scrub.epochs", True, "an integer"),
    ("method_params.neggrad_plus.beta", 1.5, "in [0, 1]"),
    ("scenarios.rc.method_params.scrub.gamma", NAN, "a finite number"),
    ("scenarios.rb_class.method_params.ssd.batch_size", False, "an integer"),
    # U-LiRA: found today only after the Original and Retrain trained
    ("ulira.num_shadows", 0, ">= 3"),
    ("ulira.num_shadows", 2, ">= 3"),
    ("ulira.bootstrap", 0, ">= 1"),
    ("ulira.workers", -1, ">= 0"),
    ("ulira.enabled", "yes", "true or false"),
    ("ulira.pool_size", 10, "at least twice the forget size of scenario 'up' (60)"),
    ("ulira.methods", ["scrubb"], "null (every listed method) or a list of registered methods"),
    # the deletion request and its gates: today mia_band=[70] crashes after unlearning
    ("deletion_request.gates.mia_band", [70], "two numbers [low, high] with 0 <= low < high <= 100"),
    ("deletion_request.gates.mia_band", [65, 35], "two numbers [low, high] with 0 <= low < high <= 100"),
    ("deletion_request.gates.mia_band", [35, 165], "two numbers [low, high] with 0 <= low < high <= 100"),
    ("deletion_request.gates.mia_band", "35-65", "two numbers [low, high] with 0 <= low < high <= 100"),
    ("deletion_request.gates.max_ulira_auc", 1.5, "in [0, 1] or null"),
    ("deletion_request.gates.max_test_error_increase", NAN, "a finite number or null"),
    ("deletion_request.gates.enabled", "no", "true or false"),
    ("deletion_request.method", "magic_eraser", "one of ['retrain', 'scrub', 'scrub_r'"),
    ("deletion_request.seed", 0, ">= 1"),
    ("deletion_request.gates.max_flagged_excess", 2.0, "in [0, 1] or null"),
    ("deletion_request.gates.flag_test_alpha", 0.0, "in (0, 1]"),
    ("registry.audit.num_shadows", 2, ">= 4"),
    ("registry.audit.num_shadows", 5, "must be even"),
    ("registry.audit.alpha", 1.5, "in (0, 1]"),
    ("registry.audit.shadow_store", None, "must name a folder when the audit is enabled"),
    ("deletion_request.method_params.scrub.lr", NAN, "a finite number"),
    # the registry the deletion pipeline reads
    ("registry.alias", "latest", "neither 'latest' nor 'v<number>'"),
    ("registry.alias", "v3", "neither 'latest' nor 'v<number>'"),
    ("registry.model_name", "a/b", "must not contain '/' or ':'"),
    ("registry.serve_original", "sometimes", "one of ['if_none', 'always', 'never']"),
    ("registry.enabled", 1, "true or false"),
    # the device, the network, the data source
    ("runtime.device", "gpu", "auto, cpu, cuda, cuda:<index> or mps"),
    ("runtime.num_threads", 0, ">= 1 or null"),
    ("model.architecture", "vit", "one of ['small_cnn', 'preact_resnet18', 'allcnn']"),
    ("model.width", 0, "> 0"),
    ("dataset.source", "mnist_from_the_web", "one of ['digits', 'npz', 'torchvision_cifar10']"),
    ("splits.mean", [0.5, "x"], "a list of finite numbers each in [0, 1] or null"),
])
def test_late_validated_parameters_fail_naming_the_parameter(base_parameters, dotted, value, allowed):
    message = _run_config_error(_with(base_parameters, dotted, value))
    assert f"parameter '{dotted}'" in message
    assert allowed in message
    assert repr(value) in message or "at least twice" in message


@pytest.mark.parametrize("seeds", ["abc", [], [1, 1], [0], [-2], [1.5], [True], None])
def test_seeds_must_be_a_non_empty_list_of_distinct_positive_integers(base_parameters, seeds):
    """Today `seeds=[]` silently runs seed 1 with the scenario checks skipped, and `seeds=abc` fails in a
    traceback that never names the parameter."""
    message = _run_config_error(_with(base_parameters, "seeds", seeds))
    assert "parameter 'seeds' must be a non-empty list of distinct positive integers" in message
    assert repr(seeds) in message
    assert validation.check_seeds([3, 1.0]) == [3, 1]


@pytest.mark.parametrize("dotted, value, named", [
    ("training.lerning_rate", 0.1, "training: unknown parameter(s) ['lerning_rate']"),
    ("ulira.num_shadow", 8, "ulira: unknown parameter(s) ['num_shadow']"),
    ("deletion_request.gates.mia_bnd", [35, 65], "deletion_request.gates: unknown parameter(s) ['mia_bnd']"),
    ("runtime.devices", "cpu", "runtime: unknown parameter(s) ['devices']"),
    ("training", "abc", "'training' must be a mapping"),
    ("methods", "scrub", "parameter 'methods' must be a list of method names"),
])
def test_unknown_names_and_malformed_blocks_are_rejected(base_parameters, dotted, value, named):
    message = _run_config_error(_with(base_parameters, dotted, value))
    assert named in message


def test_required_parameters_of_the_blocks(base_parameters):
    for dotted in ("training.lr", "registry.model_name", "deletion_request.path", "model.architecture"):
        block, name = dotted.rsplit(".", 1)
        parameters = copy.deepcopy(base_parameters)
        node = parameters
        for key in block.split("."):
            node = node[key]
        del node[name]
        assert f"missing required parameter(s) ['{name}']" in _run_config_error(parameters), dotted


def test_from_training_value_is_named_by_its_source(base_parameters):
    """EU-k's `epochs: null` takes the recipe's; the recipe's value is checked (and named) as `training.epochs`."""
    message = _run_config_error(_with(base_parameters, "training.epochs", 2.5))
    assert "parameter 'training.epochs' must be an integer, got 2.5" in message


def test_pretraining_when_enabled(base_parameters):
    enabled = _with(base_parameters, "pretraining", {"enabled": True, "classes": [5, 6], "seed": 0, "recipe": None})
    assert "parameter 'pretraining.recipe' must be a training recipe" in _run_config_error(enabled)
    recipe = {"lr": 0.1, "epochs": 0, "batch_size": 64}
    enabled = _with(enabled, "pretraining.recipe", recipe)
    assert "parameter 'pretraining.recipe.epochs' must be >= 1" in _run_config_error(enabled)
    enabled = _with(enabled, "pretraining.recipe.epochs", 2)
    assert "splits.classes" in _run_config_error(enabled)
    enabled = _with(enabled, "splits.classes", [0, 1, 2, 3, 4, 5])
    assert "got [5] in both" in _run_config_error(enabled)
    assert validation.check_run_config(_with(enabled, "splits.classes", [0, 1, 2, 3, 4])) is None


def test_registry_and_request_checks_on_their_own(base_parameters):
    """`check_registry_config` / `check_deletion_request_config` for callers that read only those blocks (the
    deletion pipeline, serve_requests)."""
    assert validation.check_registry_config(base_parameters["registry"])["alias"] == "serving"
    checked = validation.check_deletion_request_config(base_parameters["deletion_request"],
                                                       base_parameters["method_params"], base_parameters["training"])
    assert checked["method"] == "scrub_r"
    with pytest.raises(ValueError, match="'registry.audit.shadow_store' must name a folder"):
        validation.check_registry_config({**base_parameters["registry"],
                                          "audit": {"enabled": True, "num_shadows": 4}})
    with pytest.raises(ValueError, match=r"deletion_request: unknown parameter\(s\) \['ulira'\]"):
        validation.check_deletion_request_config({**base_parameters["deletion_request"], "ulira": {}},
                                                 base_parameters["method_params"], base_parameters["training"])
    # SCRUB+R runs SCRUB first: SCRUB's parameters, with the request's overrides, are checked too
    with pytest.raises(ValueError, match=r"'deletion_request\.method_params\.scrub\.temperature' must be > 0"):
        validation.check_deletion_request_config({**base_parameters["deletion_request"],
                                                  "method_params": {"scrub": {"temperature": 0}}},
                                                 base_parameters["method_params"], base_parameters["training"])


def test_ulira_pool_larger_than_the_forget_class_rejected_after_the_splits(splits):
    scenarios = {"up": copy.deepcopy(SCENARIOS["up"])}
    ulira = {"enabled": True, "num_shadows": 4, "pool_size": 500}
    with pytest.raises(ValueError) as info:
        validation.check_scenarios(splits, scenarios, copy.deepcopy(TRAINING_SETS), [1], ulira)
    message = str(info.value)
    assert "'up'" in message and "ulira.pool_size" in message and "500" in message and "[5]" in message
    assert validation.check_scenarios(splits, scenarios, copy.deepcopy(TRAINING_SETS), [1],
                                      {**ulira, "pool_size": None}) is None


# --- the environment, and the hook that runs every check when a session starts ---


def test_unknown_environment_names_it_and_the_available_ones(tmp_path):
    for name in ("base", "local", "test", ".hidden"):
        (tmp_path / name).mkdir()
    with pytest.raises(ValueError) as info:
        validation.check_environment(tmp_path, "nosuch")
    message = str(info.value)
    assert "unknown environment 'nosuch'" in message and "['base', 'local', 'test']" in message
    assert validation.check_environment(tmp_path, "test") is None
    assert validation.check_environment(tmp_path, None) is None
    assert validation.check_environment(tmp_path / "conf.tar.gz", "nosuch") is None  # an archive: Kedro's to read


class _Loader(dict):
    def __init__(self, parameters: dict, conf_source: str) -> None:
        super().__init__(parameters=parameters)
        self.conf_source = conf_source


class _Context:
    def __init__(self, parameters: dict, env: str | None = None) -> None:
        self.config_loader, self.env = _Loader(parameters, str(CONF)), env


def test_the_session_hook_validates_before_the_pipelines_exist(base_parameters, monkeypatch):
    from scrub_unlearning import hooks, pipeline_registry

    registered = []
    monkeypatch.setattr(pipeline_registry, "use_config_loader", registered.append)
    hook = hooks.ScenarioRegistryHook()
    with pytest.raises(ValueError, match="parameter 'training.epochs' must be >= 1, got -1"):
        hook.after_context_created(_Context(_with(base_parameters, "training.epochs", -1)))
    with pytest.raises(ValueError, match="unknown environment 'nosuch'"):
        hook.after_context_created(_Context(base_parameters, env="nosuch"))
    assert registered == [], "nothing was registered, so nothing can run"


def test_kedro_run_with_an_unknown_env_says_so_before_mlflow(tmp_path):
    """The one end-to-end check: the hook runs before kedro-mlflow's, whose 'filesystem backend' error was all an
    unknown `--env` used to give."""
    result = kedro(copy_project(tmp_path), "run", "--env", "nosuch", env={"COLUMNS": "400"})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "unknown environment 'nosuch'" in output and "'test'" in output and "'cifar5'" in output
    assert "filesystem" not in output.lower()
