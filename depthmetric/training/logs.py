"""What a run reports, from rank 0 only: log lines on stdout, a progress bar, and with ``--log tensorboard``
TensorBoard scalars (each loss term, learning rate, step time, metrics) and the figure in the run folder."""
from __future__ import annotations

import os
import sys

__all__ = ["RunLog"]


class RunLog:
    def __init__(self, kind: str, out: str, enabled: bool, progress: bool, total: int, initial: int):
        self.enabled = enabled
        self.progress = progress and enabled
        self.writer = None
        if enabled and kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(out, "tensorboard"))
        self.bar = None
        if self.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, unit="step")

    def line(self, message: str, quiet_too: bool = False) -> None:
        """A log line; ``quiet_too``: printed under ``--quiet`` as well (what the user must not miss)."""
        if not (self.progress or (quiet_too and self.enabled)):
            return
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, file=sys.stderr if message.startswith("warning") else sys.stdout, flush=True)

    def step(self, step: int, loss: float, parts: dict, lr: float, seconds: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", **{k: f"{v:.3f}" for k, v in parts.items()})
            self.bar.update(1)
        if self.writer is not None:
            self.writer.add_scalar("loss/total", loss, step)
            for name, value in parts.items():
                self.writer.add_scalar(f"loss/{name}", value, step)
            self.writer.add_scalar("lr", lr, step)
            self.writer.add_scalar("time/step_seconds", seconds, step)

    def metrics(self, step: int, metrics: dict) -> None:
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(f"eval/{name}", value, step)

    def figure(self, step: int, figure) -> None:
        if self.writer is not None:
            self.writer.add_figure("figure", figure, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
