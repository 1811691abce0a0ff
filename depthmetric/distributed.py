"""What the losses and metrics need under ``torch.distributed``: the process group in use,
autograd-aware sums and gathers over it, and a collective "did any rank fail?".

The *global batch* is the ranks' batches concatenated in rank order. A loss with ``normalize="global"``
returns the global-batch loss on every rank; its sums go through :func:`all_reduce_sum`, whose backward
sums the incoming gradients of all ranks, so that after DDP averages the parameter gradients (divides by the
world size) they are exactly those of one process holding the whole global batch. Every rank must call
such a loss, as every rank runs each DDP step.

Without an initialised default group (one process), every helper is the identity.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup
else:  # a torch built without torch.distributed has no ProcessGroup
    ProcessGroup = getattr(dist, "ProcessGroup", object)

from . import _checks  # used at call time only: _checks imports this module too

__all__ = ["active_group", "op_group", "world_size", "all_reduce_sum", "all_reduce_count", "all_gather_batch",
           "broadcast_from_first", "any_rank", "global_mean"]

SCOPES = ("local", "global")  # this rank's data, or the whole group's: normalize= and the contrastive across=


def active_group(process_group: ProcessGroup | None = None) -> ProcessGroup | None:
    """The group to combine over.

    Args:
        process_group: a ``torch.distributed`` process group, or ``None`` (default) for the default group.

    Returns:
        ``process_group`` if given, else the default group when ``torch.distributed`` is initialised, else
        ``None`` (one process).
    """
    if process_group is not None:
        return process_group
    if dist.is_available() and dist.is_initialized():
        return dist.group.WORLD
    return None


def op_group(normalize: str, process_group: ProcessGroup | None = None) -> ProcessGroup | None:
    """The group an op with this ``normalize`` communicates over.

    Its value checks go collective over that group (see :func:`depthmetric.set_finite_checks`): every rank
    calls such an op, and all of them then raise together.

    Args:
        normalize: the op's ``normalize``, ``"local"`` or ``"global"``.
        process_group: the op's ``process_group``; ``None`` (default): the default group.

    Returns:
        The group for ``"global"`` (see :func:`active_group`); ``None`` for ``"local"`` or one process.
    """
    return active_group(process_group) if normalize == "global" else None


def where(group: ProcessGroup | None, ranks: list[int]) -> str:
    """The ranks where a check failed, for its message: ``" (rank 1)"``, ``" (ranks 0, 1)"``; ``""`` on one
    process. A local check (``group=None``) under torch.distributed names this process's rank."""
    if group is None:
        if not (dist.is_available() and dist.is_initialized()):
            return ""
        ranks = [dist.get_rank()]
    return f" (rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))})"


def world_size(group: ProcessGroup | None) -> int:
    """The number of ranks of ``group``.

    Args:
        group: a process group, or ``None`` (one process).

    Returns:
        The group's size; 1 for ``None``.
    """
    return 1 if group is None else dist.get_world_size(group)


def _comm_device(group: ProcessGroup, like: torch.device) -> torch.device:
    """Where a collective's tensor must live: NCCL needs the current GPU, gloo takes CPU (and CUDA) tensors."""
    if dist.get_backend(group) == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return like if like.type in ("cpu", "cuda") else torch.device("cpu")


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def all_reduce_sum(tensor: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
    """The sum of ``tensor`` over the ranks, differentiable: its backward sums the gradients of every rank
    (so every rank must run it).

    Args:
        tensor: any tensor, the same shape on every rank.
        group: the process group, or ``None`` (one process: ``tensor`` itself is returned).

    Returns:
        The element-wise sum over the ranks, a new contiguous tensor of ``tensor``'s shape and dtype.
    """
    if group is None:
        return tensor
    return _AllReduceSum.apply(tensor, group)


def all_reduce_count(count: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
    """A count or any other tensor without gradient, summed over the ranks.

    Args:
        count: any tensor (detached), the same shape on every rank.
        group: the process group, or ``None`` (one process: ``count`` itself is returned).

    Returns:
        The sum over the ranks on ``count``'s device, without gradient.
    """
    if group is None:
        return count
    out = count.detach().to(_comm_device(group, count.device), copy=True)
    dist.all_reduce(out, group=group)
    return out.to(count.device)


def _batch_sizes(tensor: torch.Tensor, group: ProcessGroup, name: str) -> list[int]:
    """Every rank's batch size; the other dimensions must agree on every rank."""
    shape = torch.tensor(tensor.shape, dtype=torch.long, device=_comm_device(group, tensor.device))
    gathered = [torch.zeros_like(shape) for _ in range(world_size(group))]
    dist.all_gather(gathered, shape, group=group)
    shapes: list[tuple[int, ...]] = [tuple(s.tolist()) for s in gathered]
    if any(s[1:] != shapes[0][1:] for s in shapes):
        raise ValueError(f"{name} must have the same shape on every rank but for the batch size, got "
                         f"{', '.join(f'rank {r}: {s}' for r, s in enumerate(shapes))}")
    return [s[0] for s in shapes]


class _AllGatherBatch(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: ProcessGroup,
                sizes: list[int]) -> torch.Tensor:
        ctx.group, ctx.sizes = group, sizes
        ctx.rank = dist.get_rank(group)
        width = max(ctx.sizes)
        padded = tensor.new_zeros((width, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in ctx.sizes]
        dist.all_gather(parts, padded.contiguous(), group=group)
        return torch.cat([p[:n] for p, n in zip(parts, ctx.sizes)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        # Each rank holds the gradient of its own pairs with respect to every rank's images; the owner of an
        # image needs their sum: reduce_scatter on NCCL (equal batches), else all_reduce and its own slice (gloo
        # has no reduce_scatter).
        n = ctx.sizes[ctx.rank]
        if dist.get_backend(ctx.group) == dist.Backend.NCCL and len(set(ctx.sizes)) == 1:
            out = grad.new_empty((n, *grad.shape[1:]))
            dist.reduce_scatter_tensor(out, grad.contiguous(), group=ctx.group)
            return out, None, None
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start:start + n], None, None


def all_gather_batch(tensor: torch.Tensor, group: ProcessGroup | None,
                     name: str = "tensor") -> tuple[torch.Tensor, int]:
    """The ranks' ``tensor`` concatenated along dim 0 in rank order, differentiable: each rank's part
    receives the sum of the gradients every rank sends it.

    Args:
        tensor: ``N,...``: the batch sizes ``N`` may differ between the ranks, nothing else.
        group: the process group, or ``None`` (one process: ``(tensor, 0)``).
        name: the argument's name for the error message. Default ``"tensor"``.

    Returns:
        ``(gathered, start)``: the global tensor (``sum N,...``) and the index of this rank's first row in it.

    Raises:
        ValueError: the shapes differ between the ranks in more than the batch size.
    """
    if group is None:
        return tensor, 0
    sizes = _batch_sizes(tensor, group, name)
    return _AllGatherBatch.apply(tensor, group, sizes), sum(sizes[: dist.get_rank(group)])


def broadcast_from_first(make: Callable[[], torch.Tensor], group: ProcessGroup | None) -> torch.Tensor:
    """A tensor made on the group's first rank and sent to every rank: how random draws (the contrastive
    loss's shifts) are the same on every rank whatever each rank's seed.

    Args:
        make: called on the first rank only (on every process without a group); returns an int64 tensor of
            up to 7 dimensions.
        group: the process group, or ``None`` (one process: ``make()``).

    Returns:
        The first rank's ``make()``, on the CPU on every rank.
    """
    if group is None:
        return make()
    device = _comm_device(group, torch.device("cpu"))
    first = dist.get_global_rank(group, 0)
    mine = make() if dist.get_rank(group) == 0 else None
    header = torch.zeros(8, dtype=torch.long, device=device)  # ndim, then the sizes
    if mine is not None:
        header[0] = mine.dim()
        header[1:1 + mine.dim()] = torch.tensor(mine.shape)
    dist.broadcast(header, src=first, group=group)
    shape = header[1:1 + int(header[0])].tolist()
    buffer = mine.to(device) if mine is not None else torch.empty(shape, dtype=torch.long, device=device)
    dist.broadcast(buffer, src=first, group=group)
    return buffer.cpu()


def any_rank(flags: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
    """Every rank's flags, so that all ranks can raise the same error.

    Args:
        flags: a bool tensor of the same number of elements on every rank.
        group: the process group, or ``None`` (one process).

    Returns:
        A ``world_size x flags.numel()`` bool table on the CPU, row ``r`` rank ``r``'s flags.
    """
    if group is None:
        return flags.reshape(1, -1)
    device = _comm_device(group, flags.device)
    table = torch.zeros(world_size(group), flags.numel(), dtype=torch.int32, device=device)
    table[dist.get_rank(group)] = flags.reshape(-1).to(device=device, dtype=torch.int32)
    dist.all_reduce(table, group=group)
    return table.bool().cpu()


def check_normalize(normalize: str, process_group: ProcessGroup | None = None) -> str:
    """The distributed arguments of a loss: ``normalize`` and an optional ``process_group``."""
    _checks.choice("normalize", normalize, SCOPES)
    check_process_group(process_group)
    return normalize


def check_process_group(process_group: object) -> None:
    if process_group is not None and not (dist.is_available() and isinstance(process_group, dist.ProcessGroup)):
        raise TypeError(f"process_group must be a torch.distributed ProcessGroup or None, got "
                        f"{type(process_group).__name__}")


def global_mean(total: torch.Tensor, count: torch.Tensor, normalize: str,
                process_group: ProcessGroup | None = None) -> torch.Tensor:
    """``total / count`` over this rank's data or over the global batch.

    Args:
        total: the summed loss (differentiable), a tensor.
        count: what it is a sum of (pixels, pairs), a tensor without gradient.
        normalize: ``"local"``: this rank's ``total / count``; ``"global"``: both summed over the ranks first
            (the total differentiably, see :func:`all_reduce_sum`).
        process_group: the group of ``"global"``; ``None`` (default): the default group.

    Returns:
        ``total / max(count, 1)`` in ``total``'s dtype: 0 when nothing was counted.
    """
    if normalize == "global":
        group = active_group(process_group)
        total, count = all_reduce_sum(total, group), all_reduce_count(count, group)
    return total / count.clamp(min=1).to(total.dtype)
