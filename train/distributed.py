"""Data-parallel training across processes: what one rank knows, and the collective steps the
training loop (train/loop.py) takes when a process group is up. ``recdeploy train --nproc N``
starts the group (train/launch.py); without one every function here is the identity, so a
one-process run is exactly the loop it always was.

    group = current()                      # Group(rank=0, world_size=1) outside a process group
    part = shard(batch, group)             # rows rank, rank+N, ... of the global batch
    sync_gradients(model, len(part), group)

Why the global batch is cut per batch rather than per epoch (DistributedSampler): every rank
draws the same seeded epoch order, so the batch a step sees is the one-process run's batch; rank
r takes every N-th row of it. After backward, each rank's gradient (of its part's mean loss) is
all-reduced weighted by the rows it had: the sum over ranks divided by the batch's rows is the
gradient of the global batch's mean loss, the one a single process computes, so the optimizer
takes the same step. Losses that are means over examples decompose this way; anything drawn
from torch's global generator inside a loss (dropout masks, sampled negatives) differs per rank,
so those models match the one-process run statistically, not to rounding.

Why not ``DistributedDataParallel``: its reducer syncs only after ``forward()`` of the wrapper,
and the tasks score through other methods (``score_all``, ``gmf_scores``, ...): a wrapped model
would silently train each rank on its own gradients. The all-reduce below is what DDP's reducer
does, in one flat bucket.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


def current() -> Group:
    """This process's place in the process group (rank 0 of 1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size())
    return Group()


def collective_device(fallback: torch.device) -> torch.device:
    """Where a tensor must be for a collective: NCCL reduces CUDA tensors only (a model that
    trains on CPU under NCCL has its buffers copied over), gloo takes them where they are."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return fallback


def shard(batch: Any, group: Group) -> Any:
    """Rows rank, rank + world_size, ... of a batch: a tensor, an array, or a dataclass /
    named tuple of them (a None field stays None)."""
    if not group.parallel:
        return batch
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return batch[group.rank::group.world_size]
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: shard(getattr(batch, f.name), group)
                                             for f in dataclasses.fields(batch)})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(shard(part, group) for part in batch))
    if batch is None:
        return None
    raise TypeError(f"cannot split a batch of type {type(batch).__name__} across ranks; "
                    "a batch is a tensor, an array, or a dataclass / named tuple of them")


def sync_gradients(model: torch.nn.Module, examples: float, group: Group) -> None:
    """Replace every rank's gradients by the example-weighted mean over ranks (see the module
    docstring). A parameter no rank gave a gradient keeps none, so the optimizer skips it as a
    one-process run would; one some rank touched gets zeros where the others did not."""
    if not group.parallel:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    device = collective_device(params[0].device)
    sizes = [p.numel() for p in params]
    flat = torch.zeros(sum(sizes) + len(params) + 1, dtype=torch.float64, device=device)
    offset = 0
    for i, (p, size) in enumerate(zip(params, sizes)):
        if p.grad is not None:
            flat[offset:offset + size] = p.grad.detach().reshape(-1).to(torch.float64) * examples
            flat[sum(sizes) + i] = 1.0            # this rank has a gradient for parameter i
        offset += size
    flat[-1] = examples
    dist.all_reduce(flat)
    total = float(flat[-1])
    offset = 0
    for i, (p, size) in enumerate(zip(params, sizes)):
        if flat[sum(sizes) + i] > 0 and total > 0:
            grad = (flat[offset:offset + size] / total).to(device=p.device, dtype=p.dtype).view_as(p)
            p.grad = grad if p.grad is None else p.grad.copy_(grad)
        else:
            p.grad = None
        offset += size


def sum_over_ranks(values: list[float], group: Group) -> list[float]:
    """Element-wise sums of a few numbers over ranks (e.g. loss totals and example counts)."""
    if not group.parallel:
        return values
    flat = torch.tensor(values, dtype=torch.float64, device=collective_device(torch.device("cpu")))
    dist.all_reduce(flat)
    return flat.tolist()


def from_main(value: float | None, group: Group) -> float:
    """Rank 0's number on every rank (the validation metric early stopping decides on: one
    rank validates, every rank takes the same decision)."""
    if not group.parallel:
        assert value is not None
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return float(box[0])  # type: ignore[arg-type]


def broadcast_model(model: torch.nn.Module, group: Group) -> None:
    """Rank 0's parameters and buffers on every rank (the start of a fit, as DDP does, and its
    end, so rounding in the all-reduce can never leave the ranks apart)."""
    if not group.parallel:
        return
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            device = collective_device(tensor.device)
            if device == tensor.device:
                dist.broadcast(tensor.data, src=0)
            else:
                moved = tensor.data.to(device)
                dist.broadcast(moved, src=0)
                tensor.data.copy_(moved.to(tensor.device))
