"""The served classifier as an MLflow pyfunc logged as *models from code*: MLflow stores this file, the safetensors
weights and the JSON spec as artifacts, and nothing is pickled. Input: uint8 images (N, C, H, W), (N, H, W, C)
or flattened rows of C*H*W pixels; output: predicted class ids."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel
from safetensors.torch import load_file

from scrub_unlearning.models import load_model
from scrub_unlearning.training import predict_logits


class UnlearningClassifier(PythonModel):
    def load_context(self, context) -> None:
        self.spec = json.loads(Path(context.artifacts["spec"]).read_text())
        self.model = load_model(self.spec, load_file(context.artifacts["weights"])).eval()

    def predict(self, context, model_input, params=None) -> np.ndarray:
        x = np.asarray(model_input)
        channels, (height, width) = self.spec["in_channels"], self.spec["image_size"]
        if x.ndim == 2:
            x = x.reshape(-1, channels, height, width)
        elif x.ndim == 4 and x.shape[-1] == channels and x.shape[1] != channels:
            x = x.transpose(0, 3, 1, 2)
        logits = predict_logits(self.model, torch.as_tensor(np.ascontiguousarray(x)), torch.device("cpu"))
        return logits.argmax(dim=1).numpy()


mlflow.models.set_model(UnlearningClassifier())
