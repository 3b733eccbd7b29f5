"""Per-method parameter declarations: every method declares its parameters, every default satisfies its own
declaration, a bad value of each kind is rejected naming the parameter, and every shipped configuration validates."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

from benchmarks.config import load_parameters
from scrub_unlearning import validation
from scrub_unlearning.methods import METHODS, check_method_params, method_parameters
from scrub_unlearning.parameters import REQUIRED, Param, check_parameters, check_value, describe
from scrub_unlearning.training import OPTIMIZERS, RECIPE_PARAMETERS, SCHEDULES

CONF = Path(__file__).resolve().parents[1] / "conf"
ENVS = ("base", "cifar5", "cifar10", "test")


def _valid_value(param: Param):
    """A value the declaration accepts (its default when it has one)."""
    if not param.required:
        return param.default
    if param.kind == "choice":
        return param.choices[0]
    if param.kind == "int_list":
        return [int(param.low or 0) + 1]
    value = (param.low or 0) + 1
    return int(value) if param.kind == "int" else float(value)


def _complete(method: str) -> dict:
    """Every declared parameter of `method`, required ones with a valid value."""
    return {name: _valid_value(p) for name, p in METHODS[method].parameters.items()}


# --- declarations ---


def test_every_registered_method_declares_its_parameters():
    for name, method in METHODS.items():
        assert isinstance(method.parameters, dict), name
        for pname, param in method.parameters.items():
            assert isinstance(param, Param), (name, pname)
            assert param.help, f"{name}.{pname} has no help"
    assert METHODS["scrub_r"].parameters == {}
    assert METHODS["retrain"].parameters is RECIPE_PARAMETERS
    assert all(METHODS[name].parameters for name in METHODS if name != "scrub_r")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_default_satisfies_its_own_declaration(method):
    for name, param in METHODS[method].parameters.items():
        if not param.required:
            check_value(method, name, param.default, param)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_complete_block_validates_and_round_trips(method):
    params = _complete(method)
    checked = check_method_params(method, params)
    assert set(checked) == set(METHODS[method].parameters)
    assert check_method_params(method, checked) == checked


def test_defaults_and_required_names_are_todays():
    """The declarations keep the defaults and the required names the methods had before."""
    def defaults(method):
        return {n: p.default for n, p in METHODS[method].parameters.items() if not p.required}

    def required(method):
        return {n for n, p in METHODS[method].parameters.items() if p.required}

    assert required("scrub") == {"optimizer", "lr", "weight_decay", "gamma", "alpha", "temperature", "msteps",
                                 "epochs", "lr_decay_epochs", "retain_batch", "forget_batch"}
    assert defaults("scrub") == {"momentum": 0.9, "max_utility_drop": 5.0, "guard_alpha": 0.05}
    recipe6 = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4}
    assert defaults("finetune") == {**recipe6, "lr": 0.01, "epochs": 10, "batch_size": 128}
    assert defaults("cf_k") == {**recipe6, "lr": 0.01, "epochs": 10, "batch_size": 128}
    assert defaults("neggrad") == {**recipe6, "lr": 1e-3, "epochs": 5, "batch_size": 64}
    assert defaults("neggrad_plus") == {**recipe6, "beta": 0.95, "lr": 0.01, "epochs": 10, "retain_batch": 128,
                                        "forget_batch": 128}
    assert defaults("eu_k") == {**recipe6, "lr": 0.01, "batch_size": 128} and required("eu_k") == {"epochs"}
    assert defaults("fisher") == {"alpha": 1e-6, "max_retain_examples": None}
    assert defaults("bad_teacher") == {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.9,
                                       "epochs": 1, "batch_size": 64, "temperature": 4.0, "retain_fraction": 0.3}
    assert required("retrain") == {"lr", "epochs", "batch_size"}
    for method in ("finetune", "cf_k", "neggrad", "neggrad_plus", "fisher", "bad_teacher"):
        assert not required(method), method


def test_recipe_declares_what_train_model_reads():
    assert set(RECIPE_PARAMETERS) == {"optimizer", "lr", "momentum", "weight_decay", "epochs", "batch_size",
                                      "schedule", "lr_decay_epochs"}
    assert RECIPE_PARAMETERS["optimizer"].choices == OPTIMIZERS
    assert RECIPE_PARAMETERS["schedule"].choices == SCHEDULES
    checked = check_method_params("retrain", {"lr": 0.1, "epochs": 2, "batch_size": 64})
    assert checked == {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "epochs": 2,
                       "batch_size": 64, "schedule": "constant", "lr_decay_epochs": []}


def test_describe_lists_names_types_defaults_and_ranges():
    rows = {row["name"]: row for row in describe(METHODS["scrub"].parameters)}
    assert list(rows) == list(METHODS["scrub"].parameters)
    assert rows["lr"]["kind"] == "float" and rows["lr"]["required"] and rows["lr"]["default"] is None
    assert rows["lr"]["low"] == 0.0 and rows["lr"]["low_open"] and rows["lr"]["allowed"] == "a finite number > 0"
    assert rows["max_utility_drop"]["nullable"] and rows["max_utility_drop"]["default"] == 5.0
    assert rows["optimizer"]["choices"] == list(OPTIMIZERS)
    beta = describe(METHODS["neggrad_plus"].parameters)[0]
    assert beta["name"] == "beta" and (beta["low"], beta["high"]) == (0.0, 1.0) and beta["allowed"] == \
        "a finite number in [0, 1]"
    assert describe(RECIPE_PARAMETERS)[-1]["default"] == []


def test_meaningful_ranges_for_tuning():
    for method in METHODS.values():
        for name, param in method.parameters.items():
            if name == "lr":
                assert param.low == 0.0 and param.low_open
            if name in ("beta", "retain_fraction"):
                assert (param.low, param.high) == (0.0, 1.0)
            if name in ("epochs", "msteps"):
                assert param.kind == "int" and param.low == 0
            if name in ("batch_size", "retain_batch", "forget_batch"):
                assert param.kind == "int" and param.low == 1


# --- rejections ---


def _reject(method: str, name: str, value) -> str:
    params = {**_complete(method), name: value}
    with pytest.raises(ValueError) as info:
        check_method_params(method, params)
    message = str(info.value)
    assert method in message and f"'{name}'" in message and repr(value) in message
    return message


@pytest.mark.parametrize("method", sorted(m for m in METHODS if METHODS[m].parameters))
def test_bad_values_of_every_kind_are_rejected_naming_the_parameter(method):
    for name, param in METHODS[method].parameters.items():
        if param.kind in ("int", "float"):
            _reject(method, name, "ten")                        # wrong type
            _reject(method, name, True)                         # a bool is not a number
            assert "must be" in _reject(method, name, float("nan"))
            _reject(method, name, float("inf"))
            if param.low is not None:
                below = param.low if param.low_open else param.low - 1
                _reject(method, name, below)                    # out of range
            if param.high is not None:
                _reject(method, name, param.high + 1)
            if not param.nullable:
                _reject(method, name, None)
        if param.kind == "int":
            _reject(method, name, 2.5)
        if param.kind == "choice":
            message = _reject(method, name, "rmsprop")
            assert str(list(param.choices)) in message
            _reject(method, name, 1)
        if param.kind == "int_list":
            _reject(method, name, 5)
            _reject(method, name, [1, "two"])
            _reject(method, name, [1.5])
            _reject(method, name, [True])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_an_undeclared_parameter_is_rejected_listing_the_allowed_ones(method):
    with pytest.raises(ValueError) as info:
        check_method_params(method, {**_complete(method), "lerning_rate": 0.1})
    message = str(info.value)
    assert method in message and "lerning_rate" in message and "allowed are" in message
    for name in METHODS[method].parameters:
        assert f"'{name}'" in message


@pytest.mark.parametrize("method", sorted(m for m in METHODS if any(p.required for p in
                                                                       METHODS[m].parameters.values())))
def test_a_missing_required_parameter_is_rejected(method):
    params = _complete(method)
    name = next(n for n, p in METHODS[method].parameters.items() if p.required)
    del params[name]
    with pytest.raises(ValueError, match=f"missing required parameter.*{name}"):
        check_method_params(method, params)


def test_scrub_r_takes_no_parameters():
    assert check_method_params("scrub_r", {}) == {} and check_method_params("scrub_r", None) == {}
    with pytest.raises(ValueError, match="scrub_r.*epochs.*takes none"):
        check_method_params("scrub_r", {"epochs": 3})


def test_normalisation():
    assert check_method_params("finetune", {"optimizer": "SGD", "epochs": 3.0, "lr": 1})["optimizer"] == "sgd"
    checked = check_method_params("finetune", {"epochs": 3.0, "lr": 1})
    assert checked["epochs"] == 3 and isinstance(checked["epochs"], int)
    assert checked["lr"] == 1.0 and isinstance(checked["lr"], float)
    assert check_method_params("fisher", {"max_retain_examples": 1000.0})["max_retain_examples"] == 1000
    assert check_method_params("scrub", {**_complete("scrub"), "max_utility_drop": None})["max_utility_drop"] is None
    # the schedule is matched exactly, as train_model does
    with pytest.raises(ValueError, match="schedule"):
        check_method_params("retrain", {"lr": 0.1, "epochs": 1, "batch_size": 8, "schedule": "Cosine"})


def test_check_parameters_on_its_own():
    declared = {"n": Param("int", REQUIRED, low=0, low_open=True, help="n"),
                "x": Param("float", 0.5, low=0.0, high=1.0, nullable=True, help="x")}
    assert check_parameters("m", {"n": 1}, declared) == {"n": 1, "x": 0.5}
    assert check_parameters("m", {"n": 2, "x": None}, declared) == {"n": 2, "x": None}
    with pytest.raises(ValueError, match=r"'n' must be > 0, got 0"):
        check_parameters("m", {"n": 0}, declared)
    with pytest.raises(ValueError, match=r"'x' must be in \[0, 1\] or null, got 2"):
        check_parameters("m", {"n": 1, "x": 2}, declared)
    with pytest.raises(ValueError, match="mapping"):
        check_parameters("m", [("n", 1)], declared)
    with pytest.raises(ValueError):
        Param("string")
    with pytest.raises(ValueError):
        Param("choice")
    assert copy.deepcopy(declared["n"]).required and repr(REQUIRED) == "REQUIRED"


# --- the shipped configurations ---


@pytest.mark.parametrize("env", ENVS)
def test_shipped_configurations_validate(env):
    params = load_parameters(env, CONF.parent)
    method_params, training = params.get("method_params") or {}, params["training"]
    # every registered method (not only the listed ones) in every scenario, as it would run
    for scenario in params["scenarios"].values():
        for method in METHODS:
            checked = check_method_params(method, method_parameters(method, method_params, scenario, training))
            assert all(not (isinstance(v, float) and math.isnan(v)) for v in checked.values())
    assert validation.check_config(params["scenarios"], params["training_sets"], params["methods"],
                                   method_params, training) is None
    assert validation.check_run_config(params) is None  # every block a run reads


def test_test_env_soft_merges_over_base():
    params = load_parameters("test", CONF.parent)
    assert params["training"]["epochs"] == 8 and params["training"]["lr"] == 0.1
    assert params["method_params"]["scrub"]["epochs"] == 5 and params["method_params"]["scrub"]["gamma"] == 1.0
    rb_selective = params["scenarios"]["rb_selective"]
    neggrad = method_parameters("neggrad", params["method_params"], rb_selective, params["training"])
    assert neggrad["lr"] == 1.0e6 and neggrad["epochs"] == 5
    assert method_parameters("eu_k", params["method_params"], rb_selective, params["training"])["epochs"] == 8


# --- kinds for the run's configuration, dotted paths, and the recipe's bounds ---


def test_bool_str_and_float_list_kinds():
    flag, text = Param("bool", False, help="f"), Param("str", REQUIRED, help="t")
    pair = Param("float_list", None, low=0.0, high=100.0, nullable=True, help="p")
    assert check_value("m", "flag", True, flag) is True
    assert check_value("m", "text", "serving", text) == "serving"
    assert check_value("m", "pair", [35, 65.0], pair) == [35.0, 65.0]
    for value in ("yes", 1, 0, None):
        with pytest.raises(ValueError, match="'flag' must be true or false"):
            check_value("m", "flag", value, flag)
    for value in ("", "  ", 3, None):
        with pytest.raises(ValueError, match="'text' must be a non-empty string"):
            check_value("m", "text", value, text)
    for value in ([1, float("nan")], [1, True], [1, 101], "35,65", [10**400]):
        with pytest.raises(ValueError, match=r"'pair' must be a list of finite numbers each in \[0, 100\] or null"):
            check_value("m", "pair", value, pair)


def test_dotted_paths_name_the_parameter():
    declared = {"lr": Param("float", REQUIRED, low=0.0, low_open=True, help="lr")}
    with pytest.raises(ValueError, match=r"^parameter 'training\.lr' must be a finite number, got nan$"):
        check_parameters("training", {"lr": float("nan")}, declared, paths="training")
    with pytest.raises(ValueError, match=r"^parameter 'a\.b\.lr' must be > 0, got 0$"):
        check_parameters("x", {"lr": 0}, declared, paths=lambda name: f"a.b.{name}")
    with pytest.raises(ValueError, match=r"^x: parameter 'lr' must be > 0, got 0$"):  # without paths: as before
        check_parameters("x", {"lr": 0}, declared)


def test_recipe_bounds_momentum_and_decay_epochs():
    base = {"lr": 0.1, "epochs": 2, "batch_size": 8}
    with pytest.raises(ValueError, match=r"'momentum' must be in \[0, 1\], got 1.5"):
        check_method_params("retrain", {**base, "momentum": 1.5})
    with pytest.raises(ValueError, match=r"'lr_decay_epochs' must be a list of integers each >= 1, got \[0, 3\]"):
        check_method_params("retrain", {**base, "lr_decay_epochs": [0, 3]})
