"""``recdeploy train --nproc N``: train one model on N processes of this machine, data-parallel
(gloo on CPU, NCCL when the model trains on CUDA), launched the way ``torchrun --standalone``
does (torch's elastic agent, called as a library).

    recdeploy train --model biased_mf --nproc 2 --out runs/ddp
    launch_training(TrainConfig.for_model("biased_mf"), Path("runs/ddp"), nproc=2)   # -> rank 0's card

Every rank loads the dataset, runs the same task (train/loop.py splits each global batch and
all-reduces the gradients, see train/distributed.py) and computes the same metrics; rank 0 alone
prints, shows progress and writes the checkpoint and card (the card records the group under
``distributed``). A rank that dies stops the run: the agent notices the exit within
``MONITOR_INTERVAL_S``, stops the other ranks and ``launch`` raises ``DistributedTrainingError``
naming the rank and its exit; a rank that hangs alive trips ``collective_timeout_s`` on the
others. Nothing waits forever.

Models fitted in closed form (item_knn, user_knn, ...) take no gradient steps: there is nothing
to split, and they train in this process whatever ``--nproc`` says (printed).
"""
from __future__ import annotations

import contextlib
import io
import os
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from recdeploy.train.checkpoint import save_checkpoint
from recdeploy.train.config import ConfigError, TrainConfig
from recdeploy.train.data import load_dataset
from recdeploy.train.tasks import is_closed_form, run_task

MONITOR_INTERVAL_S = 0.2          # how often the agent looks for a dead rank
COLLECTIVE_TIMEOUT_S = 600        # a rank alive but stuck: the others give up after this long
# a rank whose collective broke because a peer died waits this long before failing itself, so
# the agent (which reports the first exit it sees) names the rank that failed, not its victims
PEER_LOSS_GRACE_S = 2.0


class DistributedTrainingError(RuntimeError):
    """A rank of a multi-process run failed; the message names it and how it ended."""


def backend_for(device: str) -> str:
    """NCCL for a model that trains on CUDA (one GPU per rank), gloo otherwise."""
    return "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"


def launch(target: Callable[..., Any], args: tuple, nproc: int,
           collective_timeout_s: float = COLLECTIVE_TIMEOUT_S) -> dict[int, Any]:
    """Run ``target(*args)`` on ``nproc`` local ranks inside a process group; -> rank ->
    return value. ``target`` must be a module-level function (ranks are spawned processes).
    A failed rank raises DistributedTrainingError after the others are stopped."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0,
                          monitor_interval=MONITOR_INTERVAL_S, start_method="spawn")
    try:
        return elastic_launch(config, _in_group)(target, args, nproc, collective_timeout_s)
    except ChildFailedError as err:
        raise DistributedTrainingError(describe_failure(err, nproc)) from None


def describe_failure(err: ChildFailedError, nproc: int) -> str:
    """One line per failed rank: its exit (code or signal) and its error, if it left one."""
    lines = [f"distributed training failed ({nproc} processes); the other ranks were stopped:"]
    for rank, failure in sorted(err.failures.items()):
        ended = (f"killed by {failure.signal_name()}" if failure.exitcode < 0
                 else f"exited with code {failure.exitcode}")
        reason = failure.message                # the error file's text, or its JSON record
        if isinstance(reason, dict):
            reason = str(reason.get("message", ""))
        if not reason or reason.startswith("To enable traceback"):
            reason = "no Python error recorded (the process died: out of memory, a signal, os._exit)"
        lines.append(f"  rank {rank} (pid {failure.pid}) {ended}: {reason}")
    return "\n".join(lines)


@record
def _in_group(target: Callable[..., Any], args: tuple, nproc: int, collective_timeout_s: float) -> Any:
    """One rank: share the machine's cores, join the group, run the target, leave."""
    if "OMP_NUM_THREADS" not in os.environ:  # N ranks on the cores one process would use
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    device = args[0].device if args and isinstance(args[0], TrainConfig) else "cpu"
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend, timeout=timedelta(seconds=collective_timeout_s))
    try:
        return target(*args)
    except RuntimeError as err:
        if lost_a_peer(err):
            time.sleep(PEER_LOSS_GRACE_S)
        raise
    finally:
        dist.destroy_process_group()


def lost_a_peer(err: BaseException) -> bool:
    """gloo's words for a collective whose peer process went away."""
    return any(words in str(err) for words in ("by peer", "Connection closed", "Broken pipe"))


def train_rank(config: TrainConfig, out: Path, data_path: Path | None, progress: bool,
               quiet: bool = False) -> dict:
    """What every rank runs: the task, then (rank 0 only) the checkpoint. -> this rank's
    metrics and what it wrote (None off rank 0). quiet: rank 0 prints nothing either."""
    rank, world = dist.get_rank(), dist.get_world_size()
    silent = rank or quiet
    quiet_ = contextlib.redirect_stdout(io.StringIO()) if silent else contextlib.nullcontext()
    with quiet_:
        ds = load_dataset(config.dataset, path=data_path)
        print(ds.summary())
        result = run_task(config, ds, progress=progress and rank == 0)
        card = {**result.card(config, ds),
                "distributed": {"nproc": world, "backend": dist.get_backend()}}
        written = save_checkpoint(out, result.model, config, card) if rank == 0 else None
    return {"rank": rank, "metrics": card["metrics"], "card": card,
            "checkpoint": None if written is None else str(written)}


def launch_training(config: TrainConfig, out: Path, nproc: int, data_path: Path | None = None,
                    progress: bool = True, quiet: bool = False) -> dict[int, dict]:
    """Train on ``nproc`` ranks; -> rank -> train_rank's answer (the checkpoint is in out)."""
    return launch(train_rank, (config, out, data_path, progress, quiet), nproc)


def closed_form_note(config: TrainConfig, nproc: int) -> str | None:
    """Why a closed-form model ignores --nproc (None when it does not)."""
    if nproc > 1 and is_closed_form(config):
        return (f"{config.model} is fitted in closed form (no gradient steps to split): "
                f"--nproc {nproc} ignored, trained in one process")
    return None
