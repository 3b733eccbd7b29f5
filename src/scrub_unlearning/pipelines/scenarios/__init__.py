"""See `pipeline.py`."""

from .pipeline import create_pipeline, scenario_table_pipeline

__all__ = ["create_pipeline", "scenario_table_pipeline"]
