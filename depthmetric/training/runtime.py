"""Where a run executes: one process, or one of several started by ``torchrun`` (or SLURM through it).

``torchrun --standalone --nproc_per_node=N -m depthmetric train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`start` then joins the process group (NCCL on CUDA, gloo on the CPU) and puts each
rank on its own GPU. Several machines: the same command with torchrun's ``--nnodes`` and
``--rdzv-endpoint``.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading

import torch
import torch.distributed as dist

__all__ = ["Runtime", "start", "stop", "broadcast_object", "StopSignals"]


@dataclasses.dataclass
class Runtime:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this run initialised the process group (and destroys it at the end)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0 writes the logs, checkpoints, figures and results."""
        return self.rank == 0


def start(device: str) -> Runtime:
    """The run's runtime for ``--device`` (``cpu``, ``cuda``, ``cuda:1``; under torchrun ``cuda`` means the
    rank's own GPU, ``LOCAL_RANK``)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not (dist.is_available() and dist.is_initialized()):
        return Runtime(device=torch.device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = torch.device(device)
    if target.type == "cuda":
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return Runtime(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=target,
                   owns_group=owns)


def stop(runtime: Runtime) -> None:
    if runtime.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(value, runtime: Runtime):
    """Rank 0's ``value`` on every rank (e.g. the run folder, whose default name is a timestamp)."""
    if not runtime.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class StopSignals:
    """While the run holds it: SIGTERM (how SLURM, Kubernetes and spot instances stop a job, SIGKILL
    following after a grace period) and SIGINT (Ctrl-C) ask the run to stop at the next step boundary, where
    it writes a checkpoint; the handler only records the signal, so no checkpoint is ever written mid-step. A
    second signal exits at once with status 128 + its number (the shell's convention). The caller's handlers
    come back afterwards. Handlers can only be installed from the main thread; elsewhere the signals keep
    theirs."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = 0  # the first signal received, 0 for none
        self._saved: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._saved = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum:
            os._exit(128 + signum)
        self.signum = signum

    def agreed(self, runtime: Runtime) -> int:
        """The signal to stop for at this step boundary (0: go on). Under torchrun any rank's: one max
        all-reduce of a number, so that every rank stops after the same step."""
        if not runtime.distributed:
            return self.signum
        flag = torch.tensor([self.signum], device=runtime.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag)
