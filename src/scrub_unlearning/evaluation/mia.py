"""The basic membership-inference attack: logistic regression on per-example cross-entropy losses."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

LOSS_CLIP = 100.0
MIN_EXAMPLES = 4  # per side: below this the cross-validated attack has nothing to fit or score


def basic_mia_not_applicable(members: int, nonmembers: int) -> str | None:
    """Why the basic MIA cannot be measured on this many members and non-members (None when it can): callers that
    must not fail on small inputs (a one-id deletion request) report the metric as not applicable with this
    reason instead of calling `basic_mia`."""
    if min(members, nonmembers) < MIN_EXAMPLES:
        return (f"basic MIA needs at least {MIN_EXAMPLES} members and {MIN_EXAMPLES} non-members, got {members} and "
                f"{nonmembers}")
    return None


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Cross-entropy per example, clipped to +-100 so a saturated model cannot produce inf."""
    losses = F.cross_entropy(logits.float(), labels.to(logits.device), reduction="none")
    return losses.clamp(-LOSS_CLIP, LOSS_CLIP).cpu().numpy()


def basic_mia(member_losses: np.ndarray, nonmember_losses: np.ndarray, seed: int) -> tuple[float, float]:
    """Accuracy (%) of telling members from non-members by loss: classes balanced by seeded subsampling,
    StratifiedShuffleSplit(5 splits, test_size 0.3). Returns (mean, std) over the splits; ideal ~ Retrain's."""
    rng = np.random.default_rng(int(seed))
    n = min(len(member_losses), len(nonmember_losses))
    reason = basic_mia_not_applicable(len(member_losses), len(nonmember_losses))
    if reason is not None:
        raise ValueError(reason)
    members = rng.choice(np.asarray(member_losses), n, replace=False)
    nonmembers = rng.choice(np.asarray(nonmember_losses), n, replace=False)
    features = np.clip(np.concatenate([members, nonmembers]), -LOSS_CLIP, LOSS_CLIP).reshape(-1, 1)
    target = np.concatenate([np.ones(n), np.zeros(n)])
    splitter = StratifiedShuffleSplit(n_splits=5, test_size=0.3, random_state=int(seed))
    scores = cross_val_score(LogisticRegression(), features, target, cv=splitter, scoring="accuracy")
    return 100.0 * float(scores.mean()), 100.0 * float(scores.std())
