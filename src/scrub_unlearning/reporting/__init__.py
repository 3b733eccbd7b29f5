"""Reports: the paper's views of a run table as matplotlib figures, and two self-contained HTML pages.

- `figures`: `forget_vs_test_figure` (the SCRUB paper's Figure 1 view), `metric_bars_figure`, `roc_figure` (the
  project's one U-LiRA ROC plotter, from per-example scores) and `load_ulira_scores`.
- `labels`: the label-layout engine of the scatter figures.
- `ranking`: the "which is better" rules of docs/design.md §5, per application, within the utility budget
  (`UTILITY_BUDGET`).
- `html`: `run_report` (the research report of a run table), `request_report` (the report of one deletion request)
  and `write_report`, rendered from the jinja2 templates in `templates/` with autoescaping.

Display names and order come from the method registry (`methods.DISPLAY_NAMES`). This package never imports Kedro,
MLflow or Optuna.
"""

from .figures import forget_vs_test_figure, load_ulira_scores, metric_bars_figure, roc_figure
from .html import request_report, run_report, write_report
from .ranking import UTILITY_BUDGET
from .tables import CHARTED_METRICS, DEFAULT_METRICS, method_label

__all__ = ["CHARTED_METRICS", "DEFAULT_METRICS", "UTILITY_BUDGET", "forget_vs_test_figure", "load_ulira_scores",
           "method_label", "metric_bars_figure", "request_report", "roc_figure", "run_report", "write_report"]
