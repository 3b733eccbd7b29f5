"""The one training loop's batching: every example once per pass, and no tiny last batch in train-mode BatchNorm."""

from __future__ import annotations

import torch

from scrub_unlearning.training import batch_indices, training_batch_count


def test_a_pass_sees_every_example_once_and_never_a_batch_under_half_size():
    for n in (1, 2, 63, 64, 65, 95, 96, 450, 500):
        for batch_size in (1, 7, 64, 128):
            batches = batch_indices(n, batch_size, torch.Generator().manual_seed(n))
            assert sorted(torch.cat(batches).tolist()) == list(range(n))
            assert len(batches) == training_batch_count(n, batch_size)
            if len(batches) > 1:
                assert min(len(b) for b in batches) * 2 >= batch_size, (n, batch_size)
    # RC's Retrain on cifar5: 450 = 7·64 + 2 -> seven batches, the last of 66
    assert [len(b) for b in batch_indices(450, 64, torch.Generator().manual_seed(0))] == [64] * 6 + [66]
    # prediction keeps the plain split (order and sizes)
    assert [len(b) for b in batch_indices(450, 64, shuffle=False)] == [64] * 7 + [2]
