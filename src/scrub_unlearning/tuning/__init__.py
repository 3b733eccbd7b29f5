"""Hyper-parameter tuning on the user's own data (docs/design.md §9): the objectives a production user can compute
(`objectives`), search spaces declared in configuration (`space`), Optuna studies that persist and resume (`study`)
and the tuned settings file a later run reads (`settings_file`). Pure PyTorch and Optuna: no Kedro, no MLflow."""
