"""EU-k ("exact unlearning of the last k layers"): re-initialise the last block of a copy of the Original at
random - the head plus the architecture's last block (`models.last_block_modules`), through every submodule's
`reset_parameters()`, which for BatchNorm also resets the running statistics, seeded by `task.seed` - then train
only that block from scratch on the retain set with cross-entropy, the rest frozen in eval mode. The re-initialised
layers never see the forget set, so whatever they held about it is gone; what the frozen layers hold is not. From
Goel et al., *Towards Adversarial Evaluation of Machine Unlearning* (arXiv:2201.06640, 2022), as used by Kurmanji
et al. (SCRUB, NeurIPS 2023). The SCRUB authors' code resets the block to the weights of a network pre-trained on
CIFAR-100 instead; those weights are not available offline, so this implementation re-initialises at random (as
Goel et al. define the method).

Parameters: optimizer (sgd | adam), lr 0.01, momentum 0.9, weight_decay 5e-4, batch_size 128, and `epochs`
(required, no default: docs/design.md §5 sets it to the Original's number of training epochs at every scale).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data import UnlearningTask
from ..models import last_block_modules
from ..parameters import REQUIRED, Param, check_parameters
from ..training import recipe_parameters, seed_everything, train_model

# epochs: required (the registry fills a null with the Original's number of epochs)
PARAMETERS: dict[str, Param] = recipe_parameters(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                                                   epochs=REQUIRED, batch_size=128)


def reset_last_block(model: nn.Module, seed: int) -> list[str]:
    """Re-initialise in place every submodule of the last block that has `reset_parameters` (BatchNorm's also
    resets its running statistics). Call it on a CPU model so the draw does not depend on the device. Returns the
    names of the reset modules."""
    seed_everything(seed)
    names = []
    for name, block in zip(model.last_block, last_block_modules(model), strict=True):
        for sub_name, module in block.named_modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                names.append(f"{name}.{sub_name}" if sub_name else name)
    return names


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """Randomly re-initialise the last block of a copy of `original`, then train only it on the retain set."""
    config = check_parameters("eu_k", params, PARAMETERS)
    model = copy.deepcopy(original).to("cpu")
    reset = reset_last_block(model, task.seed)
    trained = train_model(model, task.retain_x, task.retain_y, config, device, seed=task.seed,
                          modules=last_block_modules(model), what="eu_k")
    model.eval()
    return model, {"epoch_losses": trained["epoch_losses"],
                   "reset_modules": reset}
