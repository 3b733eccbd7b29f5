"""The tuning pipelines: `tune` (every (scenario, method) study) and `tune_original` (the Original's recipe)."""

from .pipeline import create_original_pipeline, create_pipeline

__all__ = ["create_original_pipeline", "create_pipeline"]
