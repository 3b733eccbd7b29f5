"""The Kedro side: one package per stage, each with `nodes.py` (thin functions over the library) and `pipeline.py`
(the wiring), assembled in `pipeline_registry.py` (docs/design.md §4).

- `ingestion`: load the dataset, fixed splits, every scenario checked against them before any training;
- `originals`: per training set and seed, the training set (RC-confused labels where configured) and its Original;
- `scenarios`: per scenario and seed, the forget set, Retrain, every method, U-LiRA, one evaluation per model, the
  scenario table;
- `summary`: the run-wide table, the summary over seeds, the HTML report;
- `registry`: the clean Original registered in the MLflow Model Registry;
- `deletion_request`: a deletion request served against the registered model.
"""
