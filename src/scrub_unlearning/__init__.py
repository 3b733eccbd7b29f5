"""Machine unlearning of image classifiers with SCRUB, as a Kedro + MLflow pipeline."""

__version__ = "0.1.0"
