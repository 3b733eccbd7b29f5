"""The "which is better" rules of docs/design.md §5, per application, as a ranked table.

Every application ranks within the utility budget: a method whose test error is more than `UTILITY_BUDGET` points
above the Original's is listed after the methods within budget and marked "over budget" (an unlearning method that
wins its application's criterion by wrecking the model is not better). Within each of the two groups the
application's own criterion orders the methods:

- RB (class and selective): higher forget error first; ties by lower test error.
- RC: lower interclass confusion on the test set first; ties by lower test error.
- UP: the mean of each method's rank on the |gaps| to Retrain (forget error, basic MIA, U-LiRA AUC; smaller first):
  the metrics have different units, so their ranks are averaged, not their values.

Retrain is the reference, never ranked; methods that failed on every seed are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .tables import finite, method_label, summarise

UTILITY_BUDGET = 5.0
"""Points of test error a method may lose against the Original and still rank among the methods within budget."""

WHICH_IS_BETTER = {
    "rb_class": "higher forget error",
    "rb_selective": "higher forget error",
    "rc": "lower interclass confusion on the test set (ic_error_test)",
    "up": "smaller |gap| to Retrain on forget error, MIA and U-LiRA",
}
"""The application's own criterion, in words (the utility budget comes first for every application)."""

OVER_BUDGET = "over budget"
WITHIN_BUDGET = "within budget"
UNKNOWN_BUDGET = "n/a"

_RANKED_METRICS = ("forget_error", "test_error", "ic_error_test", "mia_basic", "ulira_auc")


@dataclass(frozen=True)
class Ranking:
    """A ranked table (`table`: a column `rank`, `method` (display name), the criterion's columns, the test-error
    loss against the Original and `budget`: "within budget", "over budget" or "n/a"), the rule in words, and a
    `note` for what could not be applied. `table` is empty when nothing could be ranked (the note says why)."""

    rule: str
    table: pd.DataFrame
    note: str = ""


def criterion(application: str) -> str | None:
    """The "better =" line of an application (None for an application without a rule)."""
    if application not in WHICH_IS_BETTER:
        return None
    return (f"{WHICH_IS_BETTER[application]}, among methods whose test error is at most {UTILITY_BUDGET:g} points "
            "above the Original's")


def _budget(candidates: pd.DataFrame, summary: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
    """Adds `test_error_loss` (vs the Original) and `budget`; the Original's test error, or None without one."""
    original = summary[summary["model"] == "original"]
    if original.empty or not finite(original["test_error_mean"].iloc[0]):
        return candidates.assign(test_error_loss=float("nan"), budget=UNKNOWN_BUDGET), None
    base = float(original["test_error_mean"].iloc[0])
    loss = candidates["test_error_mean"] - base
    budget = loss.map(lambda v: UNKNOWN_BUDGET if not finite(v) else WITHIN_BUDGET if v <= UTILITY_BUDGET
                      else OVER_BUDGET)
    return candidates.assign(test_error_loss=loss, budget=budget), base


def rank_methods(rows: pd.DataFrame, application: str) -> Ranking | None:
    """The scenario's ranking (its rows of the run table), or None when the application has no rule or there is no
    method to rank."""
    if application not in WHICH_IS_BETTER:
        return None
    summary = summarise(rows, _RANKED_METRICS)
    summary = summary[~summary["failed"]]
    candidates = summary[summary["model"] != "retrain"].copy()
    if candidates.empty:
        return None
    candidates, base = _budget(candidates, summary)
    if base is None:
        note = "No Original with a test error in this scenario: the utility budget cannot be applied."
        if application in ("rb_class", "rb_selective"):  # RB's criterion is meaningless without the budget
            return Ranking(rule="", table=pd.DataFrame(), note=note)
    else:
        note = ""
    if application in ("rb_class", "rb_selective"):
        keys, ascending = ["forget_error_mean", "test_error_mean"], [False, True]
        shown = {"forget_error_mean": "forget_error", "test_error_mean": "test_error"}
        rule = "Ranked by forget error (higher first); ties by lower test error."
    elif application == "rc":
        if not candidates["ic_error_test_mean"].notna().any():
            return None
        keys, ascending = ["ic_error_test_mean", "test_error_mean"], [True, True]
        shown = {"ic_error_test_mean": "ic_error_test", "forget_error_mean": "forget_error",
                 "test_error_mean": "test_error"}
        rule = "Ranked by interclass confusion on the test set (lower first); ties by lower test error."
    else:  # up
        retrain = summary[summary["model"] == "retrain"]
        if retrain.empty:
            return Ranking(rule="", table=pd.DataFrame(),
                           note="No Retrain in this scenario: gaps to Retrain cannot be computed.")
        gaps = []
        for metric in ("forget_error", "mia_basic", "ulira_auc"):
            target = retrain[f"{metric}_mean"].iloc[0]
            if finite(target) and candidates[f"{metric}_mean"].notna().any():
                candidates[f"|{metric}_gap|"] = (candidates[f"{metric}_mean"] - float(target)).abs()
                gaps.append(f"|{metric}_gap|")
        if not gaps:
            return None
        candidates["mean_rank"] = candidates[gaps].rank(method="average").mean(axis=1)
        keys, ascending = ["mean_rank", *gaps], [True] * (1 + len(gaps))
        shown = {**{g: g for g in gaps}, "mean_rank": "mean_rank", "test_error_mean": "test_error"}
        rule = ("Ranked by the mean of each method's rank on the |gaps| to Retrain (smaller first; the metrics have "
                "different units, so their ranks are averaged, not their values).")
    if base is not None:
        rule += (f" Methods whose test error is more than {UTILITY_BUDGET:g} points above the Original's "
                 f"({base:.2f}) are listed after the others, marked \"{OVER_BUDGET}\".")
    group = candidates["budget"].map({WITHIN_BUDGET: 0, UNKNOWN_BUDGET: 1, OVER_BUDGET: 2})
    candidates = (candidates.assign(_group=group)
                  .sort_values(["_group", *keys], ascending=[True, *ascending], kind="stable", na_position="last"))
    table = candidates[["model", *shown, "test_error_loss", "budget"]].rename(
        columns={"model": "method", **shown, "test_error_loss": "test_error_vs_original"})
    table["method"] = table["method"].map(method_label)
    table.insert(0, "rank", range(1, len(table) + 1))
    return Ranking(rule=rule, table=table.reset_index(drop=True), note=note)
