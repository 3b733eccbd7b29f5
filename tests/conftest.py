"""Shared fixtures: a real digits Original trained once per test session (a few seconds on 2 cores)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scrub_unlearning.data import build_forget_set, build_training_set, load_digits_dataset, make_splits, make_task
from scrub_unlearning.models import build_model, model_spec
from scrub_unlearning.training import seed_everything, train_model

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

DIGITS_RECIPE = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=20, batch_size=64,
                     schedule="cosine")


@pytest.fixture(scope="session")
def digits_splits():
    return make_splits(load_digits_dataset(), {"val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0})


@pytest.fixture(scope="session")
def digits_training_set(digits_splits):
    return build_training_set(digits_splits, "clean", None, seed=1)


@pytest.fixture(scope="session")
def digits_original(digits_splits, digits_training_set):
    spec = model_spec("small_cnn", 10, digits_splits.image_shape, digits_splits.mean, digits_splits.std)
    seed_everything(1)
    model = build_model(spec)
    train_model(model, digits_training_set.x, digits_training_set.labels, DIGITS_RECIPE, torch.device("cpu"), 1)
    return model


@pytest.fixture(scope="session")
def digits_task(digits_splits, digits_training_set):
    def make(application: str, class_id: int = 5, size: int = 30):
        scenario = {"application": application, "forget": {"class_id": class_id, "size": size}}
        table = build_forget_set(digits_training_set, scenario, 10, seed=1)
        return make_task(digits_splits, digits_training_set, table, application, seed=1)

    return make


PROJECT = Path(__file__).resolve().parents[1]


def copy_project(root: Path) -> Path:
    """A temporary copy of the project (pyproject, conf without local, src) to run `kedro` in."""
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(PROJECT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return root


def kedro(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m kedro ...` in `project` with its own sources first on the path."""
    variables = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(project / "src"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "kedro", *args], cwd=project, env=variables, capture_output=True,
                          text=True, timeout=900)


class LookupModel(nn.Module):
    """A classifier whose predictions a test writes into the data: it predicts the class stored in pixel (0, 0, 0) of
    each image, with logit `scale` (one parameter), so every error and loss is known by hand."""

    def __init__(self, num_classes: int, scale: float = 10.0):
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x[:, 0, 0, 0].long(), self.num_classes).float() * self.scale
