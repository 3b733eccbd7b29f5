"""The edge where the project meets Kedro's catalog and MLflow (docs/design.md §3): the catalog's datasets (models as
safetensors + JSON, the shadow store), the MLflow Model Registry (register, promote, fetch) and the served pyfunc.
The library (`data`, `models`, `training`, `methods`, `evaluation`, `reporting`, `serving`) never imports this."""
