"""Tuning search spaces: every malformed entry is rejected before any training, naming its dotted path, the value
and what is allowed; good entries parse into Dimensions; `suggest` draws values inside the space that the method's
own declaration accepts, reproducibly for a seeded sampler."""

from __future__ import annotations

import optuna
import pytest

from scrub_unlearning.methods import METHODS, check_method_params
from scrub_unlearning.parameters import Param
from scrub_unlearning.tuning.space import Dimension, describe_space, parse_space, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)

SCRUB = METHODS["scrub"].parameters
FINETUNE = METHODS["finetune"].parameters
PATH = "tuning.space.scrub"

GOOD_SCRUB = {
    "lr": {"low": 1.0e-4, "high": 0.1, "log": True},
    "msteps": {"low": 1, "high": 5},
    "retain_batch": {"low": 16, "high": 64, "step": 16},
    "gamma": {"low": 0.5, "high": 2.0, "step": 0.5},
    "optimizer": {"choices": ["sgd", "adam"]},
    "lr_decay_epochs": {"choices": [[5, 8, 9], [3, 6]]},
    "max_utility_drop": {"choices": [None, 5.0]},
}

# the parameters scrub requires and the space above does not search
SCRUB_REST = {"weight_decay": 5.0e-4, "alpha": 0.5, "temperature": 2.0, "epochs": 10, "forget_batch": 32}


def _error(space, declared=SCRUB, owner="scrub", path=PATH) -> str:
    with pytest.raises(ValueError) as info:
        parse_space(owner, space, declared, path)
    return str(info.value)


# --- parsing good entries ---

def test_parse_good_entries():
    space = parse_space("scrub", GOOD_SCRUB, SCRUB, PATH)
    assert list(space) == list(GOOD_SCRUB)
    assert space["lr"] == Dimension("lr", "float", low=1.0e-4, high=0.1, log=True)
    assert space["msteps"] == Dimension("msteps", "int", low=1, high=5)
    assert isinstance(space["msteps"].low, int) and isinstance(space["msteps"].high, int)
    assert space["retain_batch"] == Dimension("retain_batch", "int", low=16, high=64, step=16)
    assert space["gamma"] == Dimension("gamma", "float", low=0.5, high=2.0, step=0.5)
    assert space["optimizer"] == Dimension("optimizer", "choice", choices=("sgd", "adam"))
    assert space["lr_decay_epochs"] == Dimension("lr_decay_epochs", "choice", choices=((5, 8, 9), (3, 6)))
    assert space["max_utility_drop"].choices == (None, 5.0)
    hash(space["lr_decay_epochs"])  # list choices are kept hashable


def test_kind_follows_the_declaration():
    # an int-looking range of a float parameter is a float dimension, an integral float range of an int one an int
    space = parse_space("scrub", {"gamma": {"low": 1, "high": 3}, "epochs": {"low": 2.0, "high": 6.0}}, SCRUB, PATH)
    assert space["gamma"].kind == "float" and space["gamma"].low == 1.0
    assert space["epochs"].kind == "int" and space["epochs"].low == 2 and isinstance(space["epochs"].low, int)


def test_choices_are_normalised_as_the_declaration_returns_them():
    space = parse_space("finetune", {"optimizer": {"choices": ["SGD", "adam"]}, "epochs": {"choices": [3.0, 5]}},
                        FINETUNE, "tuning.space.finetune")
    assert space["optimizer"].choices == ("sgd", "adam")
    assert space["epochs"].choices == (3, 5) and all(isinstance(c, int) for c in space["epochs"].choices)


def test_empty_space_is_empty():
    assert parse_space("finetune", {}, FINETUNE, "tuning.space.finetune") == {}


def test_describe_space():
    texts = describe_space(parse_space("scrub", GOOD_SCRUB, SCRUB, PATH))
    assert texts["lr"] == "[1e-4, 0.1] log"
    assert texts["msteps"] == "[1, 5]"
    assert texts["retain_batch"] == "[16, 64] step 16"
    assert texts["optimizer"] == "{sgd, adam}"
    assert texts["lr_decay_epochs"] == "{[5, 8, 9], [3, 6]}"
    assert texts["max_utility_drop"] == "{null, 5}"


# --- rejections: each names the path, the value and what is allowed ---

@pytest.mark.parametrize("space", [None, [1, 2], "lr"])
def test_space_not_a_mapping(space):
    message = _error(space)
    assert f"'{PATH}'" in message and "must be a mapping" in message and repr(space) in message


def test_undeclared_parameter_lists_the_declared_ones():
    message = _error({"learning_rate": {"low": 0.01, "high": 0.1}})
    assert f"'{PATH}.learning_rate'" in message and "no parameter 'learning_rate'" in message
    assert str(list(SCRUB)) in message


@pytest.mark.parametrize("entry", [0.01, [0.01, 0.1], "sgd"])
def test_entry_not_a_mapping(entry):
    message = _error({"lr": entry})
    assert f"'{PATH}.lr'" in message and "{low, high" in message and "{choices" in message and repr(entry) in message


def test_entry_with_unknown_keys():
    message = _error({"lr": {"low": 0.01, "high": 0.1, "scale": "log"}})
    assert f"'{PATH}.lr'" in message and "unknown key(s) ['scale']" in message
    assert "'low', 'high', 'log', 'step'" in message and "'choices'" in message


def test_entry_that_is_neither_range_nor_choices():
    message = _error({"lr": {}})
    assert f"'{PATH}.lr'" in message and "must be {low, high[, log][, step]} or {choices: [...]}" in message


def test_entry_mixing_range_and_choices():
    message = _error({"lr": {"low": 0.01, "high": 0.1, "choices": [0.01]}})
    assert f"'{PATH}.lr'" in message and "mixes choices with range key(s) ['high', 'low']" in message


@pytest.mark.parametrize("entry, missing", [({"low": 0.01}, "high"), ({"high": 0.1, "log": True}, "low")])
def test_range_needs_low_and_high(entry, missing):
    message = _error({"lr": entry})
    assert f"'{PATH}.lr'" in message and f"without {missing}" in message and "needs both low and high" in message


@pytest.mark.parametrize("bad", ["0.01", None, True, float("nan"), float("inf")])
def test_bounds_must_be_numbers(bad):
    message = _error({"lr": {"low": bad, "high": 0.1}})
    assert f"'{PATH}.lr.low'" in message and "must be a finite number" in message and repr(bad) in message
    message = _error({"lr": {"low": 0.01, "high": bad}})
    assert f"'{PATH}.lr.high'" in message and "must be a finite number" in message


@pytest.mark.parametrize("low, high", [(0.1, 0.1), (0.1, 0.01)])
def test_empty_or_inverted_range(low, high):
    message = _error({"lr": {"low": low, "high": high}})
    assert f"'{PATH}.lr'" in message and "empty or inverted range" in message
    assert f"low ({low!r}) must be below high ({high!r})" in message


def test_bounds_outside_the_declared_range():
    # lr is declared > 0: 0 is not a learning rate
    message = _error({"lr": {"low": 0.0, "high": 0.1}})
    assert f"'{PATH}.lr.low'" in message and "> 0" in message and "got 0.0" in message
    # guard_alpha is declared in (0, 1]
    message = _error({"guard_alpha": {"low": 0.01, "high": 1.5}})
    assert f"'{PATH}.guard_alpha.high'" in message and "in (0, 1]" in message and "got 1.5" in message
    # msteps is declared >= 0
    message = _error({"msteps": {"low": -1, "high": 3}})
    assert f"'{PATH}.msteps.low'" in message and ">= 0" in message and "got -1" in message


def test_int_parameter_needs_integral_bounds():
    message = _error({"msteps": {"low": 1, "high": 4.5}})
    assert f"'{PATH}.msteps.high'" in message and "must be an integer" in message and "got 4.5" in message


def test_log_needs_positive_low():
    # weight_decay is declared >= 0, so 0 is a valid bound, but not of a log range
    message = _error({"weight_decay": {"low": 0.0, "high": 0.01, "log": True}})
    assert f"'{PATH}.weight_decay.low'" in message and "log: true" in message and "got 0.0" in message


def test_log_must_be_a_bool():
    message = _error({"lr": {"low": 0.01, "high": 0.1, "log": "yes"}})
    assert f"'{PATH}.lr.log'" in message and "true or false" in message and "'yes'" in message


@pytest.mark.parametrize("step, reason", [(0, "positive"), (-1, "positive"), (1.5, "positive integer"),
                                          (3, "whole steps")])
def test_bad_int_step(step, reason):
    message = _error({"msteps": {"low": 1, "high": 5, "step": step}})
    assert f"'{PATH}.msteps.step'" in message and reason in message and f"got {step!r}" in message


def test_step_with_log():
    message = _error({"lr": {"low": 0.01, "high": 0.1, "log": True, "step": 0.01}})
    assert f"'{PATH}.lr.step'" in message and "log: true" in message


@pytest.mark.parametrize("name", ["optimizer", "lr_decay_epochs"])
def test_range_for_a_non_numeric_parameter(name):
    # a choice parameter and an int_list one both need choices
    message = _error({name: {"low": 1, "high": 3}})
    assert f"'{PATH}.{name}'" in message and f"is a {SCRUB[name].kind} parameter" in message
    assert "{choices: [...]}" in message


def test_range_for_bool_and_str_parameters():
    declared = {"flag": Param("bool", False), "name": Param("str", "a")}
    for name in declared:
        message = _error({name: {"low": 0, "high": 1}}, declared=declared, owner="demo", path="tuning.space.demo")
        assert f"'tuning.space.demo.{name}'" in message and "{choices: [...]}" in message


@pytest.mark.parametrize("choices", [[], None, "sgd", {"sgd": 1}])
def test_empty_or_non_list_choices(choices):
    message = _error({"optimizer": {"choices": choices}})
    assert f"'{PATH}.optimizer.choices'" in message and "non-empty list" in message and "one of ['sgd', 'adam']" \
        in message and repr(choices) in message


@pytest.mark.parametrize("name, choices, index, allowed", [
    ("optimizer", ["sgd", "rmsprop"], 1, "one of ['sgd', 'adam']"),
    ("lr", [0.01, 0.0], 1, "> 0"),
    ("msteps", [1, 2.5], 1, "an integer"),
    ("lr_decay_epochs", [[5, 8], [0, 3]], 1, "a list of integers each >= 1"),
    ("lr_decay_epochs", [[5, 8], 5], 1, "a list of integers"),
    ("retain_batch", [None], 0, "an integer >= 1"),  # not nullable
])
def test_choice_rejected_by_the_declaration(name, choices, index, allowed):
    message = _error({name: {"choices": choices}})
    assert f"'{PATH}.{name}.choices[{index}]'" in message and allowed in message
    assert f"got {choices[index]!r}" in message


@pytest.mark.parametrize("name, choices", [("optimizer", ["sgd", "adam", "sgd"]), ("optimizer", ["sgd", "SGD"]),
                                           ("lr", [0.1, 0.01, 0.1]), ("gamma", [1, 1.0]),
                                           ("lr_decay_epochs", [[5, 8], [3], [5, 8]])])
def test_duplicate_choices(name, choices):
    message = _error({name: {"choices": choices}})
    assert f"'{PATH}.{name}.choices[" in message and "duplicates choice" in message


def test_path_is_the_one_given():
    message = _error({"lr": {"low": 0.0, "high": 0.1}}, declared=FINETUNE, owner="finetune",
                     path="tuning.space.finetune")
    assert "'tuning.space.finetune.lr.low'" in message


# --- sampling ---

def _study(seed: int = 0) -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))


def test_suggest_draws_inside_the_space_and_passes_the_declaration():
    space = parse_space("scrub", GOOD_SCRUB, SCRUB, PATH)
    study = _study()
    seen_lists = set()
    for _ in range(30):
        trial = study.ask()
        values = suggest(trial, space)
        assert set(values) == set(GOOD_SCRUB)
        assert 1.0e-4 <= values["lr"] <= 0.1 and isinstance(values["lr"], float)
        assert 1 <= values["msteps"] <= 5 and isinstance(values["msteps"], int)
        assert values["retain_batch"] in (16, 32, 48, 64)
        assert values["gamma"] in (0.5, 1.0, 1.5, 2.0)
        assert values["optimizer"] in ("sgd", "adam")
        assert isinstance(values["lr_decay_epochs"], list) and values["lr_decay_epochs"] in ([5, 8, 9], [3, 6])
        seen_lists.add(tuple(values["lr_decay_epochs"]))
        assert values["max_utility_drop"] in (None, 5.0)
        checked = check_method_params("scrub", {**SCRUB_REST, **values})
        assert {name: checked[name] for name in values} == values
        study.tell(trial, values["lr"])
    assert seen_lists == {(5, 8, 9), (3, 6)}


def test_suggest_finetune_space():
    space = parse_space("finetune", {"lr": {"low": 1e-3, "high": 0.1, "log": True}, "epochs": {"low": 2, "high": 10},
                                     "batch_size": {"choices": [64, 128]}}, FINETUNE, "tuning.space.finetune")
    trial = _study(3).ask()
    values = suggest(trial, space)
    assert trial.params["lr"] == values["lr"] and trial.params["epochs"] == values["epochs"]
    check_method_params("finetune", values)


def test_list_choices_are_stored_as_json_text():
    space = parse_space("scrub", {"lr_decay_epochs": GOOD_SCRUB["lr_decay_epochs"]}, SCRUB, PATH)
    trial = _study().ask()
    values = suggest(trial, space)
    assert trial.params["lr_decay_epochs"] in ("[5, 8, 9]", "[3, 6]")
    assert values["lr_decay_epochs"] == [int(x) for x in trial.params["lr_decay_epochs"].strip("[]").split(", ")]


def test_same_seed_same_values():
    space = parse_space("scrub", GOOD_SCRUB, SCRUB, PATH)

    def draws(seed: int) -> list[dict]:
        study = _study(seed)
        return [suggest(study.ask(), space) for _ in range(5)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_the_configured_point_keeps_values_inside_the_space():
    import optuna

    from scrub_unlearning.methods import get_method
    from scrub_unlearning.tuning.space import configured_point, parse_space, suggest

    space = parse_space("scrub", {"lr": {"low": 1e-3, "high": 0.05, "log": True}, "msteps": {"low": 1, "high": 5},
                                  "optimizer": {"choices": ["sgd", "adam"]},
                                  "lr_decay_epochs": {"choices": [[5, 8, 9], [3, 6]]}},
                        get_method("scrub").parameters, "tuning.space.scrub")
    configured = {"lr": 0.01, "msteps": 9, "optimizer": "adam", "lr_decay_epochs": [5, 8, 9], "gamma": 1.0}
    point = configured_point(space, configured)
    assert set(point) == {"lr", "optimizer", "lr_decay_epochs"}, "msteps 9 is outside [1, 5]: left to the sampler"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(point)
    drawn = suggest(study.ask(), space)
    assert drawn["lr"] == 0.01 and drawn["optimizer"] == "adam" and drawn["lr_decay_epochs"] == [5, 8, 9]
    assert 1 <= drawn["msteps"] <= 5
