"""Targets for train.launch.launch that fail on rank 1, for tests/train/test_distributed.py.
A module of its own (imported as ``ddp_faults``) because ranks are spawned processes that
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
