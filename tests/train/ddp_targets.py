"""Targets for train.launch.launch (ranks that fail, a toy fit), for tests/train/test_distributed.py.
A module of its own (imported as ``ddp_targets``) because ranks are spawned processes that
import their target by name."""
from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist


def exit_on_rank_1(code: int) -> str:
    dist.all_reduce(torch.ones(1))            # both ranks are in the group
    if dist.get_rank() == 1:
        os._exit(code)                        # dies without a Python error, like an OOM kill
    dist.all_reduce(torch.ones(1))            # rank 0 waits here for a rank that is gone
    return "unreachable"


def raise_on_rank_1() -> str:
    if dist.get_rank() == 1:
        raise ValueError("rank 1 cannot read its shard")
    dist.all_reduce(torch.ones(1))
    return "unreachable"


def hang_on_rank_1(seconds: float) -> str:
    dist.all_reduce(torch.ones(1))
    if dist.get_rank() == 1:
        time.sleep(seconds)                   # alive but stuck: only the collective timeout helps
    dist.all_reduce(torch.ones(1))
    return "done"


def fit_tiny(seed: int = 0) -> dict:
    """fit() on a least-squares toy in batches of 3 over 7 rows: the last batch has one row,
    so under 2 ranks rank 1 gets none in that step. -> the weights and the epoch loss."""
    import numpy as np

    from recdeploy.train.loop import fit, shuffled_batches, train_epoch

    torch.manual_seed(seed)
    x = torch.randn(7, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)

    def batch_loss(rows):
        return (model(x[rows]).squeeze(1) - y[rows]).pow(2).mean()

    fit(model, optimizer, np.random.default_rng(seed), epochs=3, batches=shuffled_batches(7, 3),
        batch_loss=batch_loss, validate=lambda m: -float(batch_loss(torch.arange(7)).detach()), patience=None)
    loss = train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.0), [torch.arange(7)], batch_loss)
    return {"weight": model.weight.detach().clone(), "bias": model.bias.detach().clone(), "loss": loss}
