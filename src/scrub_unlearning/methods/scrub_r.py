"""SCRUB+R ("rewind", Kurmanji et al. 2023, §4 for user privacy): a forget error far above what a model that never
saw the data would show is itself a membership signal. SCRUB+R therefore picks, along SCRUB's own trajectory,
the checkpoint whose forget error is closest to a reference for "never seen":

- target = the final SCRUB student's error on the *validation* examples of the forget set's classes, scored the way
  `forget_error` is (for RC against the swapped label A<->B) — held-out data of the same classes;
- candidates = epoch 0 (the Original) and every SCRUB epoch that passed the guard;
- answer = the candidate whose error on the forget set is closest to the target (ties: the later epoch).

No second SCRUB run: it reads the checkpoints SCRUB kept. Epoch 0 is a valid answer (the authors' code crashes
there).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from ..data import UnlearningTask
from ..parameters import Param, check_parameters
from ..training import model_error

PARAMETERS: dict[str, Param] = {}  # none: it reads SCRUB's trajectory


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device,
            scrub_info: dict) -> tuple[nn.Module, dict]:
    """Rewind SCRUB: return the checkpoint of `scrub_info['checkpoints']` closest to the target forget error."""
    check_parameters("scrub_r", params, PARAMETERS)
    start = time.perf_counter()
    target = float(scrub_info["final_forget_class_val_error"])
    candidate = copy.deepcopy(original).to(device)
    forget_errors = {}
    for epoch, state in sorted(scrub_info["checkpoints"].items()):
        candidate.load_state_dict(state)
        forget_errors[int(epoch)] = model_error(candidate, task.forget_x, task.forget_y, device)
    chosen = min(forget_errors, key=lambda e: (abs(forget_errors[e] - target), -e))
    candidate.load_state_dict(scrub_info["checkpoints"][chosen])
    candidate.eval()
    selection_seconds = time.perf_counter() - start
    return candidate, {
        "selection_seconds": selection_seconds,
        "target_forget_error": target,
        "checkpoint_forget_errors": forget_errors,
        "chosen_epoch": chosen,
        "guard_fired": scrub_info.get("guard_fired", False),
        "guard_epoch": scrub_info.get("guard_epoch"),
    }
