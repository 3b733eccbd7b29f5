"""See `pipeline.py`."""

from .pipeline import create_pipeline, create_pretraining_pipeline

__all__ = ["create_pipeline", "create_pretraining_pipeline"]
