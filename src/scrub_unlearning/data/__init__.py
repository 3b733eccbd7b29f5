"""Data: loaders to uint8 tensors, fixed splits, forget-set builders per application (no Kedro, no MLflow)."""

from .forget_sets import (
    APPLICATIONS,
    TrainingSet,
    UnlearningTask,
    build_class_forget_set,
    build_confusion_forget_set,
    build_forget_set,
    build_selective_forget_set,
    build_training_set,
    make_task,
)
from .loaders import RawDataset, load_dataset, load_digits_dataset, load_npz_dataset, load_torchvision_cifar10
from .splits import Splits, make_splits

__all__ = [
    "APPLICATIONS", "RawDataset", "Splits", "TrainingSet", "UnlearningTask", "build_class_forget_set",
    "build_confusion_forget_set", "build_forget_set", "build_selective_forget_set", "build_training_set",
    "load_dataset", "load_digits_dataset", "load_npz_dataset", "load_torchvision_cifar10", "make_splits", "make_task",
]
