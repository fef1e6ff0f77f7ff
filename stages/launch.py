"""Data-parallel start-up for a stage: `finetune.num_processes: N` re-runs the stage under torchrun on this machine;
a stage already started by a launcher (`torchrun`, `accelerate launch`: WORLD_SIZE is set) just joins its group."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from contextlib import contextmanager

log = logging.getLogger(__name__)


def launched() -> bool:
    """True in a process a launcher started (it sets WORLD_SIZE, even for one process)."""
    return "WORLD_SIZE" in os.environ


def relaunch(module: str, processes: int) -> int | None:
    """Run `python -m module` as `processes` local processes under torchrun and return its exit status, or None when
    there is nothing to start (one process asked for, or already under a launcher)."""
    if processes <= 1 or launched():
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", module]
    # torchrun gives each process 1 thread unless told; on a CPU the cores are shared out instead
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = {"OMP_NUM_THREADS": str(threads)} | os.environ
    log.info("starting %d processes: %s", processes, " ".join(cmd[1:]))
    return subprocess.run(cmd, env=env, check=False).returncode


def distributed_state(device):
    """accelerate's PartialState on `device`'s type (stages.modeling.pick_device): joins the launcher's process group
    (gloo on CPU, NCCL on CUDA) when there is one. Every process but the first logs warnings only, so a log reads as
    one process's."""
    from accelerate import PartialState

    state = PartialState(cpu=device.type == "cpu")  # on a CPU machine, cpu=False would make accelerate see no group
    if not state.is_main_process:
        logging.getLogger().setLevel(logging.WARNING)
    return state


@contextmanager
def tracked(state, main: bool):
    """A training stage's body under its MLflow run: marked FAILED if anything raises (on the first process, the one
    that logs), and this process's group ended either way."""
    from stages import tracking

    try:
        yield
    except BaseException:
        if main:
            tracking.fail_run()
        raise
    finally:
        state.destroy_process_group()
