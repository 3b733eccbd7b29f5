"""Tuning studies (docs/design.md §9): one Optuna study per (scenario, method), and one for the Original's recipe.

A study is seeded TPE over the search space declared in configuration (`tuning/space.py`), minimising an objective a
production user can compute (`tuning/objectives.py`: the training split's retain/forget and the validation split;
never test, never Retrain). Studies persist in an Optuna RDB storage (a SQLite file under the environment's data
root), so an interrupted `kedro run --pipelines=tune` continues where it stopped: `n_trials` counts the finished
(complete or pruned) trials a study must have, and a rerun runs only the missing ones. A trial that was running when
its process died is marked failed and does not count.

Pruning: every training loop reports its epochs (`progress.observe_epoch`); inside a trial, the objective is
computed on the model after each epoch and reported to Optuna's median pruner, which stops a trial whose
intermediate objective is worse than the median of earlier trials at the same epoch (after `WARMUP_EPOCHS`). Methods
without epochs (Fisher, SSD) are never pruned.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import optuna
import torch
from optuna.trial import TrialState
from torch import nn

from ..data import TrainingSet, UnlearningTask
from ..methods import check_method_params, get_method
from ..methods.runner import MethodResult, run_method
from ..pretraining import initial_model
from ..progress import StopWork, observing_epochs
from ..training import error_percent, predict_logits, train_model
from ..validation import check_training
from .objectives import Outcome, combined, guarded, kept_validation_error, tuning_outcome
from .settings_file import ORIGINAL_MODEL_KEYS
from .space import Dimension, suggest

WARMUP_EPOCHS = 2  # no pruning before the third epoch: SCRUB's max steps make early epochs look worse than they end
STARTUP_TRIALS = 3  # neither TPE's model nor the pruner's median before this many finished trials

optuna.logging.set_verbosity(optuna.logging.WARNING)  # progress is ours (one line per trial), not Optuna's


class TrialFailed(Exception):  # noqa: N818 - a trial's outcome, reported as Optuna's FAIL state
    """The method failed on this trial's settings (diverged, raised): the trial fails, the study goes on."""


@dataclass
class TrialRecord:
    """One trial as MLflow and the logs show it."""

    study: str
    number: int
    state: str
    params: dict
    value: float = math.nan
    parts: dict = field(default_factory=dict)
    seconds: float = math.nan
    note: str = ""
    started: float = math.nan  # Unix time the trial started (its MLflow run's start)


@dataclass
class StudyOutcome:
    """A finished study: its best trial's settings and objective, what it ran, and the trials of this call."""

    study: str
    storage: str
    best_params: dict | None
    best_value: float
    best_parts: dict
    complete: int
    pruned: int
    failed: int
    seconds: float
    trials: list[TrialRecord] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return self.complete + self.pruned


def seeded_sampler(sampler_seed: int, trials_so_far: int) -> optuna.samplers.TPESampler:
    """TPE seeded by the sampler seed and the number of trials the study already holds: a study resumed after an
    interruption draws the same settings as one that ran without a break (a sampler created once and reloaded would
    restart its random state at the resume)."""
    return optuna.samplers.TPESampler(seed=int(sampler_seed) * 100_003 + int(trials_so_far),
                                      n_startup_trials=STARTUP_TRIALS)


def open_study(name: str, storage: str, sampler_seed: int, pruning: bool = True) -> optuna.Study:
    """The study `name` in `storage` (created, or loaded to continue), seeded TPE, median pruner (or none). Trials a
    dead process left RUNNING are marked FAIL so they do not count (one `tune` per environment at a time)."""
    sampler = seeded_sampler(sampler_seed, 0)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=WARMUP_EPOCHS)
              if pruning else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                direction="minimize", load_if_exists=True)
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
    study.set_user_attr("sampler_seed", int(sampler_seed))
    return study


def _count(study: optuna.Study, *states: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


Objective = Callable[[optuna.Trial], tuple[float, dict]]


def run_study(study: optuna.Study, n_trials: int, objective: Objective, storage: str = "",
              on_trial: Callable[[TrialRecord], None] | None = None,
              progress: Callable[[str], None] | None = None) -> StudyOutcome:
    """Run trials until the study has `n_trials` finished (complete or pruned) trials. `objective(trial)` returns
    (value, parts); it raises `optuna.TrialPruned` or `progress.StopWork` when pruned and `TrialFailed` when the
    method failed. As many failures as `n_trials` in one call stop the study (a space where nothing runs)."""
    if int(n_trials) < 1:
        raise ValueError(f"tuning.n_trials must be at least 1, got {n_trials}")
    start, records, failures = time.perf_counter(), [], 0
    done = _count(study, TrialState.COMPLETE, TrialState.PRUNED)
    if progress and done:
        progress(f"{study.study_name}: {done} of {n_trials} trials already done, continuing")
    while done < int(n_trials) and failures < int(n_trials):
        study.sampler = seeded_sampler(study.user_attrs.get("sampler_seed", 0), len(study.trials))
        trial = study.ask()
        began = time.perf_counter()
        record = TrialRecord(study.study_name, trial.number, "COMPLETE", {}, started=time.time())
        try:
            record.value, record.parts = objective(trial)
            study.tell(trial, record.value)
        except (optuna.TrialPruned, StopWork) as stop:
            record.state, record.note = "PRUNED", str(stop)
            study.tell(trial, state=TrialState.PRUNED)
        except TrialFailed as failure:
            record.state, record.note = "FAIL", str(failure)
            study.tell(trial, state=TrialState.FAIL)
            failures += 1
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)  # a bug or an interrupt: recorded, then raised
            raise
        record.params, record.seconds = dict(trial.params), time.perf_counter() - began
        records.append(record)
        done = _count(study, TrialState.COMPLETE, TrialState.PRUNED)
        if on_trial:
            on_trial(record)
        if progress:
            best = _best(study)
            progress(f"{study.study_name}: trial {trial.number} {record.state.lower()}"
                     + (f" objective {record.value:.3f}" if record.state == "COMPLETE" else f" ({record.note})")
                     + f" · {done}/{n_trials} done, {max(0, int(n_trials) - done)} left"
                     + (f" · best {best.value:.3f} (trial {best.number})" if best else ""))
    best = _best(study)
    return StudyOutcome(
        study=study.study_name, storage=storage, best_params=dict(best.user_attrs.get("settings", best.params)) if best
        else None,
        best_value=float(best.value) if best else math.nan,
        best_parts=dict(best.user_attrs.get("parts", {})) if best else {},
        complete=_count(study, TrialState.COMPLETE), pruned=_count(study, TrialState.PRUNED),
        failed=_count(study, TrialState.FAIL), seconds=time.perf_counter() - start, trials=records)


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The complete trial with the lowest objective (a trial whose guard fired pays the budget's penalty in it,
    `objectives.guarded`); ties (many trials reach 100% forgotten-class error) go to the lower kept-class
    validation error, then to the earlier trial."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

    def part(trial: optuna.trial.FrozenTrial, name: str, missing: float) -> float:
        value = (trial.user_attrs.get("parts") or {}).get(name, missing)
        return value if isinstance(value, (int, float)) and math.isfinite(value) else math.inf

    return (min(complete, key=lambda t: (t.value, part(t, "kept_val_error", math.inf), t.number))
            if complete else None)


def _pruning_observer(trial: optuna.Trial, score: Callable[[nn.Module, tuple[float, ...]], float], pruning: bool):
    """Report the objective after every epoch; stop the trial when the pruner says so. `score(model, rejected)` is
    the objective of the epoch's model given the kept-class errors of the epochs a guard rolled back so far, so a
    trial whose guard fired (or let an epoch over the budget pass) reports the penalty it will end with, not the
    clean value of the model it rolled back to or recovered into."""
    def observe(what: str, epoch: int, total: int, model: nn.Module, rejected: tuple[float, ...]) -> None:
        if not pruning:
            return
        was_training = model.training
        try:
            value = float(score(model, rejected))
        finally:
            model.train(was_training)
        if math.isfinite(value):
            trial.report(value, epoch)
        if trial.should_prune():
            raise StopWork(f"pruned after epoch {epoch} of {total} ({what}), objective {value:.3f}")
    return observe


@dataclass
class TuningTask:
    """One tuning seed's unlearning problem: its Original, its task (forget set, retain set, validation split), the
    seed (the basic MIA's), and what a rewinding method reads (SCRUB+R: SCRUB's result on this task)."""

    original: nn.Module
    task: UnlearningTask
    seed: int
    rewound: MethodResult | None = None


def method_objective(method: str, base_params: Mapping, space: Mapping[str, Dimension],
                     tasks: Sequence[TuningTask], device: torch.device, *, max_utility_drop: float,
                     pruning: bool = True) -> Objective:
    """The objective of tuning `method` on `tasks` (one per tuning seed): the trial's settings over `base_params`
    (the method's configured parameters), checked against the method's declaration, run through the one runner (no
    model store: every trial's settings differ) on each task, scored by the application's objective and combined
    over the tasks (`objectives.combined`). The pruner sees the first task's epochs; a trial over the budget on one
    task is not run on the rest (it is infeasible whatever they give; its value and parts are those of the tasks it
    ran, `tasks` says how many)."""
    if not tasks:
        raise ValueError("method_objective needs at least one tuning task")
    kept_of_original = [kept_validation_error(t.original, t.task, device) for t in tasks]

    def objective(trial: optuna.Trial) -> tuple[float, dict]:
        sampled = suggest(trial, space)
        trial.set_user_attr("settings", sampled)  # as the method reads them (list choices as lists)
        params = check_method_params(method, {**dict(base_params), **sampled})
        outcomes = []
        for number, (tuning_task, original_kept) in enumerate(zip(tasks, kept_of_original, strict=True)):
            outcome, extra = _run_on_task(method, params, tuning_task, original_kept, device, max_utility_drop,
                                          trial if number == 0 and pruning else None)
            outcomes.append(Outcome(outcome.value, {**outcome.parts, **extra}, outcome.feasible))
            if not outcome.feasible:
                break
        outcome = combined(outcomes)
        parts = {**outcome.parts, "tasks": float(len(outcomes)), "feasible": float(outcome.feasible)}
        trial.set_user_attr("parts", parts)
        return outcome.value, parts

    return objective


def _run_on_task(method: str, params: dict, tuning_task: TuningTask, original_kept: float, device: torch.device,
                 max_utility_drop: float, pruned_trial: optuna.Trial | None) -> tuple[Outcome, dict]:
    """`method` with `params` on one tuning task, scored (`guarded` for SCRUB with its guard on: every epoch it went
    through counts); with `pruned_trial`, every epoch's objective is reported to its pruner. Returns the outcome and
    the parts that describe the run (guard epoch, peak kept-class error, seconds)."""
    task, seed = tuning_task.task, tuning_task.seed

    def score(model: nn.Module) -> Outcome:
        return tuning_outcome(model, task, original_kept, max_utility_drop, seed, device)

    has_guard = params.get("max_utility_drop") is not None  # SCRUB with its guard on (objectives.guarded)
    accepted_so_far: list[float] = []  # kept-class errors of the models the observer saw (accepted epochs)

    def epoch_value(model: nn.Module, rejected: tuple[float, ...]) -> float:
        outcome = score(model)
        if not has_guard:
            return outcome.value
        # after a rejected epoch `model` is the last accepted one, already seen (or the Original): no harm
        accepted_so_far.append(outcome.parts["kept_val_error"])
        return guarded(outcome, rejected, max_utility_drop, accepted_so_far).value

    with observing_epochs(_pruning_observer(pruned_trial, epoch_value, pruned_trial is not None)):
        result = run_method(method, tuning_task.original, task, params, device, tuning_task.rewound)
    if not result.ok:
        raise TrialFailed(result.failure)
    outcome = score(result.model)
    trajectory = [row for row in result.info.get("trajectory", ()) if row["epoch"] >= 1]
    extra = {}
    if "guard_fired" in result.info:  # SCRUB: with its guard on, every epoch it went through counts (guarded)
        rejected = [row["val_error_kept"] for row in trajectory if not row["accepted"]]
        accepted = [row["val_error_kept"] for row in trajectory if row["accepted"]] if has_guard else []
        outcome = guarded(outcome, rejected, max_utility_drop, accepted)
        guard_epoch = result.info.get("guard_epoch")
        extra["guard_epoch"] = math.nan if guard_epoch is None else float(guard_epoch)
    if trajectory:  # the worst epoch, rolled back or not: how close the settings came to the budget on the way
        extra["peak_kept_val_error"] = max(float(row["val_error_kept"]) for row in trajectory)
    return outcome, {**extra, "method_seconds": result.seconds}


def split_original_settings(settings: Mapping) -> tuple[dict, dict]:
    """(training recipe keys, model keys) of the Original's tuned settings."""
    return ({k: v for k, v in settings.items() if k not in ORIGINAL_MODEL_KEYS},
            {k: v for k, v in settings.items() if k in ORIGINAL_MODEL_KEYS})


def original_objective(training_set: TrainingSet, val_x: torch.Tensor, val_y: torch.Tensor, base_recipe: Mapping,
                       space: Mapping[str, Dimension], spec_for: Callable[[Mapping], dict], device: torch.device, *,
                       seed: int, pruning: bool = True) -> Objective:
    """The objective of tuning the Original's recipe (and width): validation error of an Original trained with the
    trial's settings, as the pipeline trains it (from the backbone when the run pre-trains). `spec_for(model_keys)`
    builds the architecture's spec for the trial's model settings."""

    def score(model: nn.Module) -> float:
        return error_percent(predict_logits(model, val_x, device), val_y)

    def objective(trial: optuna.Trial) -> tuple[float, dict]:
        sampled = suggest(trial, space)
        trial.set_user_attr("settings", sampled)
        recipe_keys, model_keys = split_original_settings(sampled)
        recipe = check_training({**dict(base_recipe), **recipe_keys})
        network = initial_model(spec_for(model_keys), seed, training_set.backbone)
        with observing_epochs(_pruning_observer(trial, lambda m, _rejected: score(m), pruning)):
            trained = train_model(network, training_set.x, training_set.labels, recipe, device, seed,
                                  what="tuning the original")
        val_error = score(network)
        parts = {"val_error": val_error,
                 "train_error": error_percent(predict_logits(network, training_set.x, device), training_set.labels),
                 "train_seconds": trained["seconds"]}
        trial.set_user_attr("parts", parts)
        return val_error, parts

    return objective


def rewound_result(method: str, original: nn.Module, task: UnlearningTask, params_of: Callable[[str], dict],
                   device: torch.device, store=None) -> MethodResult | None:
    """The result a rewinding method (SCRUB+R) reads, computed once per study with the rewound method's configured
    parameters (from the model store when it is there); None for a method that rewinds nothing."""
    rewinds = get_method(method).rewinds
    if not rewinds:
        return None
    result = run_method(rewinds, original, task, params_of(rewinds), device, None, store)
    if not result.ok:
        raise TrialFailed(f"{rewinds}, which {method} rewinds, failed with its configured settings: {result.failure}")
    return result
