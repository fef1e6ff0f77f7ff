"""Training progress a person can follow: a bar on a terminal; in a log (CI, the Prefect flow, cron: no TTY) a line
when training starts and at least once a minute: step / total, epoch, samples/s, loss, ETA."""

from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

from stages.modeling import PROGRESS_SECONDS

log = logging.getLogger("stages.training")


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """Counts optimizer steps from `start` to `total`; silent on every process but the main one."""

    def __init__(self, total: int, start: int, epochs: int, rows_per_step: int, main: bool = True) -> None:
        self.total, self.start, self.epochs, self.rows_per_step, self.main = total, start, epochs, rows_per_step, main
        self.step, self.t0 = start, time.monotonic()
        self.last = self.t0
        tty = sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=start, desc="finetune", unit="step", mininterval=2,
                        disable=not (main and tty))
        self.lines = main and not tty

    def update(self, step: int, epoch: int, loss: float) -> None:
        self.bar.update(step - self.step)
        self.step = step
        self.bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", refresh=False)
        now = time.monotonic()
        if self.lines and (now - self.last >= PROGRESS_SECONDS or step == self.start + 1):
            self.last = now
            rate = (step - self.start) / max(now - self.t0, 1e-9)  # optimizer steps per second, validation included
            log.info("step %d/%d (epoch %d/%d), %.1f samples/s, loss %.4f, ETA %s", step, self.total, epoch,
                     self.epochs, rate * self.rows_per_step, loss, _duration((self.total - step) / max(rate, 1e-9)))

    def close(self) -> None:
        self.bar.close()
