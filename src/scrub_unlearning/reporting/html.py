"""The two HTML reports, rendered from jinja2 templates (`templates/`, autoescaped: every text that comes from a
table, a summary or a caller is escaped; only the templates' own markup is markup).

- `run_report`: the research report of a run table (summary, failed rows, guard firings, then per scenario the
  criterion, the Figure-1 view, metric bars, the U-LiRA ROC, the "which is better" ranking and the rows).
- `request_report`: the report of one deletion request, for whoever handles the request: what was asked, the version
  chain and whether the new version serves, before/after numbers in plain words, the audit (shadow models: the
  method-level U-LiRA and the served-model test) when it ran, the quality gates.

Both pages are self-contained (figures as base64 PNG, CSS inline, no external resource). `write_report` saves one.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape
from matplotlib.figure import Figure

from .figures import forget_vs_test_figure, metric_bars_figure, p_value_figure, roc_figure, roc_points_figure
from .ranking import OVER_BUDGET, criterion, rank_methods
from .tables import (
    CHARTED_METRICS,
    DEFAULT_METRICS,
    application_of,
    has_values,
    method_label,
    ok_mask,
    ordered_models,
    scenario_rows,
)

__all__ = ["request_report", "run_report", "write_report"]

# columns shown first in the run tables, in this order; the rest follow in the table's order, `failure` last
_LEADING_COLUMNS = ("model", "seed", "status", "forget_error", "retain_error", "test_error", "val_error",
                    "forgotten_class_test_error", "ic_error_test", "ic_error_retain", "ic_count_test",
                    "ic_count_retain", "ic_all_error_test", "ic_all_error_retain", "mia_basic",
                    "mia_basic_split_std", "ulira_auc", "ulira_auc_ci_low", "ulira_auc_ci_high", "ulira_acc",
                    "klom_forget_p50", "klom_forget_p95", "klom_retain_p50", "klom_retain_p95")
_INTEGER_COLUMNS = {"seed", "guard_epoch", "ic_count_test", "ic_count_retain", "ic_count_test_gap",
                    "ic_count_retain_gap", "ic_all_count_test", "ic_all_count_retain", "ic_all_count_test_gap",
                    "ic_all_count_retain_gap", "seeds", "failed_seeds", "rank"}
_REDUNDANT_IN_SECTION = {"scenario", "application"}
_GUARD_COLUMN = "guard_fired"


# --- rendering ---------------------------------------------------------------------------------------------------

def _break_underscores(text) -> Markup:
    """Escaped text that may wrap after each underscore (long metric names in table headers)."""
    return Markup("_<wbr>").join(escape(str(text)).split("_"))


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(loader=PackageLoader("scrub_unlearning.reporting", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["wbr"] = _break_underscores
    return env


def _render(template: str, **context) -> str:
    return _environment().get_template(template).render(**context)


def _figure(fig: Figure, alt: str, caption: str, dpi: int = 110) -> dict:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None}, facecolor="white")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"src": f"data:image/png;base64,{data}", "alt": alt, "caption": caption}


def _missing(value) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _format_cell(value, column: str) -> tuple[str, str]:
    """(text, css class) of one table cell: floats to 2 decimals, NaN/None as "n/a" (blank for a missing failure
    reason). The text is escaped by the template."""
    if column == "failure" and _missing(value):
        return "", "text wrap"
    if _missing(value):
        return "n/a", "na"
    if isinstance(value, (bool, np.bool_)):
        return ("yes" if value else "no"), "text"
    if isinstance(value, (int, np.integer)):
        return str(int(value)), "num"
    if isinstance(value, (float, np.floating)):
        if math.isinf(value):
            return ("∞" if value > 0 else "−∞"), "num"
        if column in _INTEGER_COLUMNS and float(value).is_integer():
            return str(int(value)), "num"
        return f"{value:.2f}", "num"
    return str(value), ("text wrap" if column == "failure" else "text")


def _table(frame: pd.DataFrame, row_classes: Sequence[str] | None = None) -> dict:
    """A frame as the templates' table: {"columns": [...], "rows": [{"css", "cells": [(text, css), ...]}]}."""
    rows = []
    for i, record in enumerate(frame.itertuples(index=False, name=None)):
        cells = [_format_cell(value, str(column)) for column, value in zip(frame.columns, record, strict=True)]
        rows.append({"css": row_classes[i] if row_classes else "", "cells": cells})
    return {"columns": [str(c) for c in frame.columns], "rows": rows}


# --- the run report ----------------------------------------------------------------------------------------------

def _row_classes(frame: pd.DataFrame) -> list[str]:
    ok = ok_mask(frame)
    models = frame["model"].astype(str) if "model" in frame.columns else [""] * len(frame)
    return ["failed" if not good else "retrain" if model == "retrain" else "original" if model == "original" else ""
            for model, good in zip(models, ok, strict=True)]


def _sorted_like_display(rows: pd.DataFrame) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(ordered_models(rows["model"]))}
    keys = ["_order"] + (["seed"] if "seed" in rows.columns else [])
    return (rows.assign(_order=rows["model"].astype(str).map(order)).sort_values(keys, kind="stable")
            .drop(columns="_order"))


def _scenario_table(rows: pd.DataFrame) -> dict:
    """The scenario's rows for display: methods in display order, key and metric columns first, empty columns
    dropped, `failure` last (only when a row has a reason); each row's css class."""
    rows = _sorted_like_display(rows)
    classes = _row_classes(rows)
    rows = rows.assign(model=rows["model"].map(method_label))
    keep = [c for c in rows.columns if c not in _REDUNDANT_IN_SECTION and c != "failure"
            and (c in ("model", "seed", "status") or rows[c].notna().any())]
    first = [c for c in _LEADING_COLUMNS if c in keep]
    columns = first + [c for c in keep if c not in first]
    if "failure" in rows.columns and rows["failure"].astype(object).fillna("").astype(str).str.strip().ne("").any():
        columns.append("failure")
    return _table(rows[columns], classes)


def _fired(table: pd.DataFrame) -> pd.Series:
    return table[_GUARD_COLUMN].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))


def _run_summary(table: pd.DataFrame) -> dict:
    ok = ok_mask(table)
    scenarios = []
    for scenario in pd.unique(table["scenario"].astype(str)):
        application = application_of(table[table["scenario"].astype(str) == scenario], scenario)
        scenarios.append({"name": scenario, "application": application if application != scenario else None})
    models = ordered_models(table["model"])
    seeds = sorted(pd.unique(table["seed"]).tolist()) if "seed" in table.columns else []
    failed = table[~ok]
    failed_table = None
    if not failed.empty:
        columns = [c for c in ("scenario", "model", "seed", "failure") if c in failed.columns]
        shown = failed[columns].assign(model=failed["model"].map(method_label))
        failed_table = _table(shown.reset_index(drop=True), ["failed"] * len(shown))
    guard = None
    if _GUARD_COLUMN in table.columns:
        fired = _fired(table)
        guard = {"table": None}
        if fired.any():
            columns = [c for c in ("scenario", "model", "seed", "guard_epoch") if c in table.columns]
            shown = table.loc[fired, columns]
            guard["table"] = _table(shown.assign(model=shown["model"].map(method_label)).reset_index(drop=True))
    return {"scenarios": scenarios, "methods": [method_label(m) for m in models], "seeds": [str(s) for s in seeds],
            "rows": len(table), "ok": int(ok.sum()), "failed": int((~ok).sum()), "failed_table": failed_table,
            "guard": guard}


def _ranking_view(rows: pd.DataFrame, application: str) -> dict | None:
    ranking = rank_methods(rows, application)
    if ranking is None:
        return None
    table = None
    if not ranking.table.empty:
        classes = ["over" if budget == OVER_BUDGET else "" for budget in ranking.table["budget"]]
        table = _table(ranking.table, classes)
    return {"rule": ranking.rule, "note": ranking.note, "table": table}


def _scenario_section(table: pd.DataFrame, scenario: str, index: int, scores: dict | None) -> dict:
    rows = scenario_rows(table, scenario)
    application = application_of(rows, scenario)
    figures = []
    if has_values(rows, "forget_error") and has_values(rows, "test_error"):
        figures.append(_figure(
            forget_vs_test_figure(table, scenario), f"{scenario}: forget vs test error",
            "The SCRUB paper's Figure 1 view: forget error (x) against test error (y). Retrain (black star) is the "
            "target; Original (grey cross) is the model before unlearning; the dashed line is the utility budget."))
    metrics = [m for m in CHARTED_METRICS.get(application, DEFAULT_METRICS) if has_values(rows, m)]
    if metrics:
        figures.append(_figure(
            metric_bars_figure(table, scenario, metrics), f"{scenario}: " + ", ".join(metrics),
            "Dashed line: Retrain's value. A gap marked \"failed\" is a method that failed on every seed."))
    if scores:
        figures.append(_figure(
            roc_figure(scores, title=f"{scenario}: U-LiRA ROC"), f"{scenario}: U-LiRA ROC",
            "Leave-one-shadow-out scores of every shadow, pooled (as ulira_auc). An ideal unlearning method follows "
            "the diagonal, as Retrain should."))
    return {"id": f"scenario-{index}", "name": scenario,
            "application": application if application != scenario else None,
            "criterion": criterion(application), "figures": figures,
            "ranking": _ranking_view(rows, application), "table": _scenario_table(rows)}


def run_report(table: pd.DataFrame, title: str,
               scores_by_scenario: dict[str, dict[str, pd.DataFrame]] | None = None) -> str:
    """The research report of a run table (one row per scenario, model and seed), as one self-contained HTML page.

    Contents: the title; a run summary (scenarios, methods, seeds, failed rows with their reasons, and the guard
    firings when the table has a `guard_fired` column); then per scenario the "which is better" criterion, the
    Figure-1 view (forget vs test error), bars of the application's `CHARTED_METRICS` (those present), the U-LiRA ROC
    when `scores_by_scenario[scenario]` holds per-example scores ({model: frame with member, score}), the ranking
    (`ranking.rank_methods`) and the scenario's rows. Floats show with 2 decimals and NaN as "n/a".
    """
    if "scenario" not in table.columns or "model" not in table.columns:
        raise KeyError("run_report needs a table with 'scenario' and 'model' columns")
    scores_by_scenario = scores_by_scenario or {}
    scenarios = list(pd.unique(table["scenario"].astype(str)))
    sections = [_scenario_section(table, scenario, index, scores_by_scenario.get(scenario))
                for index, scenario in enumerate(scenarios)]
    return _render("run_report.html.j2", title=title, summary=_run_summary(table), sections=sections)


# --- the deletion-request report ---------------------------------------------------------------------------------

_REQUEST_METRICS = {
    "forget_error": ("Error on the forgotten examples", "%",
                     "Higher means the model no longer recognises them; it should come close to the next line."),
    "held_out_error_same_classes": ("Error on unseen test examples of the same classes", "%",
                                    "What a model that never saw the forgotten examples scores on similar data."),
    "retain_error": ("Error on the training data that was kept", "%", "Should stay low."),
    "test_error": ("Error on the test set", "%", "The model's usefulness: lower is better."),
    "mia_basic": ("Membership-attack accuracy", "%",
                  "How well a simple attack tells the forgotten examples from unseen ones; 50% means it cannot."),
}
_ULIRA_KEYS = ("ulira_auc", "ulira_auc_ci_low", "ulira_auc_ci_high", "ulira_acc")
_AUDIT_PREFIX = "audit_"  # the audit's own metrics (audit_flagged_share, ...): shown in the audit section only
_GATE_LABELS = {
    "test_error_increase": "Rise in test error (points)",
    "ulira_auc": "Membership attack on the unlearning method (U-LiRA AUC)",
    "mia_basic_in_band": "Membership-attack accuracy (%)",
    "flagged_share_excess": "Requested examples flagged beyond chance (share above the never-seen examples)",
}
_RETRY_COMMAND = ('kedro run --pipelines=deletion_request --params '
                  '"deletion_request.path=<the request CSV>,deletion_request.method=<method>"')


def _number(value, digits: int = 2) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a" if value is None else str(value)
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _limit(limit) -> str:
    if isinstance(limit, (list, tuple)) and len(limit) == 2:
        return f"between {_number(limit[0])} and {_number(limit[1])}"
    return f"at most {_number(limit)}"


def _p_value(value) -> str:
    """A p-value for reading: "< 0.001" when tiny, else 3 decimals; "n/a" when missing."""
    value = _finite_or_none(value)
    return "n/a" if value is None else "< 0.001" if value < 0.001 else f"{value:.3f}"


def _gates_view(gates: dict | None) -> dict:
    gates = gates or {}
    checks = []
    for name, check in (gates.get("checks") or {}).items():
        check = check if isinstance(check, dict) else {}
        details = []
        if "fisher_p" in check:
            details.append(f"Fisher's exact test p = {_p_value(check.get('fisher_p'))}")
        if check.get("note"):
            details.append(str(check["note"]))
        checks.append({"name": _GATE_LABELS.get(name, name), "value": _number(check.get("value")),
                       "limit": _limit(check.get("limit")), "passed": bool(check.get("passed")),
                       "applicable": check.get("applicable", True) is not False, "detail": "; ".join(details)})
    return {"enabled": bool(gates.get("enabled")), "passed": bool(gates.get("passed", True)), "checks": checks,
            "failed": [c["name"] for c in checks if c["applicable"] and not c["passed"]]}


def _metrics_view(before: dict, after: dict) -> list[dict]:
    names = [m for m in _REQUEST_METRICS if m in before or m in after]
    names += [m for m in dict.fromkeys([*before, *after])
              if m not in _REQUEST_METRICS and m not in _ULIRA_KEYS and not str(m).startswith(_AUDIT_PREFIX)]
    rows = []
    for name in names:
        label, unit, hint = _REQUEST_METRICS.get(name, (name, "", ""))
        old, new = before.get(name), after.get(name)
        try:
            change = float(new) - float(old)
            change_text = "n/a" if math.isnan(change) else f"{change:+.2f}"
        except (TypeError, ValueError):
            change_text = "n/a"
        rows.append({"label": label, "unit": unit, "hint": hint, "before": _number(old), "after": _number(new),
                     "change": change_text})
    return rows


def _ulira_view(after: dict) -> dict | None:
    if "ulira_auc" not in after or _missing(after.get("ulira_auc")):
        return None
    return {"auc": _number(after["ulira_auc"], 3), "low": _number(after.get("ulira_auc_ci_low"), 3),
            "high": _number(after.get("ulira_auc_ci_high"), 3), "acc": _number(after.get("ulira_acc"), 3)}


def _duration(seconds) -> str:
    """Seconds for reading: "95.2 s", "812 s (about 14 min)", "9000 s (about 2.5 h)"; "n/a" when missing."""
    seconds = _finite_or_none(seconds)
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds:.0f} s (about {seconds / 60:.0f} min)"
    return f"{seconds:.0f} s (about {seconds / 3600:.1f} h)"


def _count(value) -> str:
    return _number(value, 0)


def _share(value) -> str:
    """A share (0.12) as a percentage ("12.0%")."""
    value = _finite_or_none(value)
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _finite_or_none(value) -> float | None:
    """`value` as a float, or None when it is missing, not a number or NaN."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


_ROLE_LABELS = {"original": "original model", "unlearned": "unlearned", "unknown": "role not recorded"}


def _chain_view(chain, version_after, promoted: bool) -> list[dict] | None:
    """The version chain (oldest first) then the candidate: [{"version", "text", "candidate", "promoted"}]."""
    if not chain:
        return None
    links = []
    for link in chain:
        if not isinstance(link, dict):
            continue
        role = str(link.get("role") or "").strip()
        text = _ROLE_LABELS.get(role, role)
        if link.get("request_id") is not None:
            text = (text + ", " if text else "") + f"request {link['request_id']}"
        links.append({"version": str(link.get("version", "?")), "text": text, "candidate": False, "promoted": True})
    links.append({"version": str(version_after) if version_after is not None else "?",
                  "text": "this request's candidate", "candidate": True, "promoted": promoted})
    return links


def _held_text(held, count) -> str | None:
    values = [int(v) for v in (held or []) if _finite_or_none(v) is not None]
    if not values:
        return None
    of = f" of the {count}" if _finite_or_none(count) is not None else ""
    spread = f"{min(values)}" if min(values) == max(values) else f"between {min(values)} and {max(values)}"
    text = f"{spread}{of} per shadow, {sum(values) / len(values):.1f} on average"
    none = sum(v == 0 for v in values)
    if none:
        text += f"; {none} shadow{'s' if none != 1 else ''} had trained on none of them"
    return text


def _served_view(served: dict | None) -> dict | None:
    if not isinstance(served, dict):
        return None
    alpha = _finite_or_none(served.get("alpha"))
    rows = []
    for key, label in (("request", "Requested examples (to be forgotten)"),
                       ("chance", "Never-seen validation examples (chance level)")):
        side = served.get(key) if isinstance(served.get(key), dict) else {}
        rows.append({"label": label, "n": _count(side.get("n")), "flagged": _count(side.get("flagged")),
                     "share": _share(side.get("share")), "flagged_bh": _count(side.get("flagged_bh"))})
    excess = _finite_or_none(served.get("excess"))
    return {"alpha": f"{alpha:g}" if alpha is not None else "n/a", "rows": rows,
            "excess": f"{100 * excess:+.1f} percentage points" if excess is not None else "n/a",
            "fisher_p": _p_value(served.get("fisher_p")), "correction": served.get("correction") or None,
            "figure": _figure(
                p_value_figure(served.get("p_request"), served.get("p_chance"), alpha),
                "p-values of the requested and of the never-seen examples",
                "Share of examples (y) whose p-value is at most x, for the requested examples (blue) and the "
                "never-seen validation examples (grey); the dashed red line is α, and where a curve crosses it is "
                "the share flagged. The right panel zooms on small p-values. A blue curve well above the grey one "
                "near 0 would mean the candidate still recognises requested examples.")}


def _has_points(values) -> bool:
    try:
        return values is not None and len(values) > 0
    except TypeError:
        return False


def _audit_view(audit: dict, count) -> dict:
    """The audit section's values as display text (every number formatted, "n/a" when missing)."""
    method = method_label(audit["method"]) if audit.get("method") else "the same method"
    ulira = audit.get("ulira") if isinstance(audit.get("ulira"), dict) else None
    ulira_view = None
    if ulira is not None:
        figure = None
        if _has_points(ulira.get("fpr")) and _has_points(ulira.get("tpr")):
            label = f"{method}  (AUC {_number(ulira.get('auc'), 3)})"
            figure = _figure(
                roc_points_figure(ulira["fpr"], ulira["tpr"], label,
                                  title=f"U-LiRA ROC of {method} on the shadow models"),
                "U-LiRA ROC of the unlearning method",
                "How often the attacker correctly spots an unlearned example (y) against how often it wrongly "
                "accuses a never-seen one (x), at every threshold. The dashed diagonal is guessing; the closer the "
                "blue curve stays to it, the less the unlearned examples stand out.", dpi=95)
        ulira_view = {"auc": _number(ulira.get("auc"), 3), "low": _number(ulira.get("ci_low"), 3),
                      "high": _number(ulira.get("ci_high"), 3), "acc": _number(ulira.get("acc"), 3),
                      "figure": figure}
    earlier = _finite_or_none(audit.get("earlier_requests"))
    return {"num_shadows": _count(audit.get("num_shadows")),
            "registration_version": audit.get("registration_version"),
            "registration_time": (_duration(audit.get("registration_seconds"))
                                  if _finite_or_none(audit.get("registration_seconds")) is not None else None),
            "earlier_requests": int(earlier) if earlier is not None else None,
            "held": _held_text(audit.get("held_per_shadow"), count),
            "time": _duration(audit.get("seconds")), "method": method, "ulira": ulira_view,
            "ulira_note": audit.get("ulira_note") or None, "served": _served_view(audit.get("served"))}


def request_report(summary: dict) -> str:
    """The report of one deletion request, as one self-contained HTML page, from the request's summary (the dict
    `pipelines.deletion.evaluate_and_register` builds).

    A processed request shows what was requested (how many examples, never which), the method, the version chain
    (`summary["chain"]`, oldest first, then the candidate, promoted or not and why), the before/after numbers with
    plain-language labels (the U-LiRA line and `audit_*` metrics left to the audit section when there is one), the
    audit when `summary["audit"]` is set (what the shadow models did, the method-level U-LiRA with its ROC, the
    served-model test with its p-value figure) and the quality
    gates, with the command to serve the request again when a gate failed. A request that was already processed
    (`skipped`) gets a short page saying that nothing was done, with the earlier outcome. Example ids, their hashes
    and pixels are never shown (the summary carries none). Missing or NaN numbers show as "n/a".
    """
    request_id = str(summary.get("request_id", "unknown"))
    context = {
        "title": f"Deletion request {request_id}",
        "request_id": request_id,
        "skipped": bool(summary.get("skipped")),
        "count": summary.get("count"),
        "method": method_label(summary["method"]) if summary.get("method") else None,
        "version_before": summary.get("version_before"),
        "version_after": summary.get("version_after"),
        "promoted": bool(summary.get("promoted")),
        "gates": _gates_view(summary.get("gates")),
        "retry_command": _RETRY_COMMAND,
    }
    if context["skipped"]:
        context.update(reason=summary.get("reason") or "already processed", time=summary.get("time"))
    else:
        before, after = dict(summary.get("before") or {}), dict(summary.get("after") or {})
        audit = summary.get("audit")
        context.update(metrics=_metrics_view(before, after), ulira=None if audit else _ulira_view(after),
                       seconds=_number(summary.get("seconds"), 1) if summary.get("seconds") is not None else None,
                       ledger_time=summary.get("ledger_time"),
                       chain=_chain_view(summary.get("chain"), summary.get("version_after"), context["promoted"]),
                       audit=_audit_view(audit, summary.get("count")) if audit else None)
    return _render("request_report.html.j2", **context)


def write_report(html: str, path: str | Path) -> Path:
    """Write the HTML page to `path` (UTF-8; parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
