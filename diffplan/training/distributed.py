"""Training on several processes (DDP): who does what, and how the processes agree.

Three ways to get N processes, all with Lightning's ``DDPStrategy`` (gloo on CPUs, nccl on GPUs):

- ``--strategy ddp`` (also ``auto`` with several devices): Lightning re-runs the command line for ranks
  1..N-1. Before it does, rank 0 puts what it decided (which model, which checkpoint to resume) into the
  environment the children inherit (:data:`CHILD_RUN_ENV`); a child trains that model only, skips the
  checks and the other models, and writes nothing.
- ``--strategy ddp_spawn``: Lightning spawns N processes that run only the fit; the launching process
  holds the lock and writes the release files afterwards.
- torchrun, SLURM (any Lightning cluster environment that starts the processes itself): every process
  runs the command. The processes join their process group first, rank 0 decides (up to date, lock,
  resume) and broadcasts the decision (:class:`Agreement`); the others follow it.

In every case only global rank 0 (or the spawning process) takes the lock and touches the run folder and
the release folder. A resumed checkpoint is read by rank 0 and broadcast (:class:`RankZeroLoadDDP`), so
other machines need no access to the run folder; they need the data set and the manifest at the same
paths.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy

from diffplan.errors import BadInputError

CHILD_RUN_ENV = "DIFFPLAN_DDP_RUN"  # rank 0's decision, inherited by the ranks Lightning launches
STRATEGIES = ("auto", "ddp", "ddp_spawn")
# What Lightning's script launcher sets in the launching process; restored after each fit, so that the
# next model's fit launches its own processes again.
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")


def _no_forward_buffer_sync() -> dict[str, bool]:
    """DDP's option for no buffer broadcast in forward passes (torch 2.13 renamed it)."""
    from torch.nn.parallel import DistributedDataParallel

    parameters = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers": False}


class RankZeroLoadDDP(DDPStrategy):
    """DDP whose resumed checkpoint is read by global rank 0 only and broadcast to the other ranks.

    Buffers are not broadcast in forward passes: the planners' buffers are constants (or escnn's
    eval-mode filter caches, rebuilt from identical weights on every rank), so a forward pass needs no
    collective and ranks may score different numbers of validation batches.
    """

    def __init__(self, *, start_method: str, timeout: timedelta) -> None:
        super().__init__(start_method=start_method, timeout=timeout, **_no_forward_buffer_sync())

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        checkpoint = super().load_checkpoint(checkpoint_path, weights_only) if self.is_global_zero else None
        return self.broadcast(checkpoint, src=0)


@dataclass(frozen=True)
class Launch:
    """How this process takes part in a run.

    ``kind``: ``single`` (one process), ``launcher`` (rank 0 of a run whose other ranks Lightning starts),
    ``child`` (a rank Lightning started by re-running the command), ``external`` (a rank started by
    torchrun, SLURM ...). ``decision``: for a child, what rank 0 decided.
    """

    kind: str
    world_size: int = 1
    global_rank: int = 0
    start_method: str = "popen"
    decision: dict[str, Any] | None = None
    # external runs: Lightning's cluster environment and this rank's device, to join the process group
    environment: Any = field(default=None, compare=False, repr=False)
    device: torch.device | None = field(default=None, compare=False, repr=False)

    @property
    def primary(self) -> bool:
        """Whether this process takes the lock and writes files (global rank 0, or the spawning process)."""
        return self.kind in ("single", "launcher") or (self.kind == "external" and self.global_rank == 0)

    @property
    def distributed(self) -> bool:
        return self.kind != "single"


def child_decision() -> dict[str, Any] | None:
    """Rank 0's decision when this process is a rank Lightning launched for it, else None."""
    text = os.environ.get(CHILD_RUN_ENV)
    return None if text is None else json.loads(text)


def _external_rank() -> int | None:
    """This process's global rank when a cluster environment (torchrun, SLURM ...) started it."""
    from lightning_fabric.plugins.environments import (
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    for environment in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment):
        if environment.detect():  # Lightning's own order of preference
            return environment().global_rank()
    return None


def is_secondary_rank() -> bool:
    """Whether this process is a DDP rank other than 0 (it trains, but shows and writes nothing)."""
    if child_decision() is not None:
        return True
    rank = _external_rank()
    return rank is not None and rank != 0


def start_method(strategy: str) -> str:
    """Lightning's process start method for a strategy name ('auto' and 'ddp' re-run the command)."""
    if strategy not in STRATEGIES:
        raise BadInputError(
            f"--strategy {strategy!r} is not supported; choose one of {', '.join(STRATEGIES)} "
            f"(several devices or --num-nodes > 1 train with DDP)."
        )
    interactive = bool(getattr(sys, "ps1", None)) or "ipykernel" in sys.modules
    return "spawn" if strategy == "ddp_spawn" or interactive else "popen"


def plan_launch(accelerator: Any, devices: Any, num_nodes: int, strategy: str) -> Launch:
    """How this process takes part, from the hardware options and the environment (starts nothing)."""
    method = start_method(strategy)
    decision = child_decision()
    if decision is not None:
        return Launch("child", int(os.environ.get("WORLD_SIZE", 2)), -1, method, decision)
    probe = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    world = probe.num_devices * probe.num_nodes
    if not isinstance(probe.strategy, DDPStrategy):
        return Launch("single")
    environment = probe.strategy.cluster_environment
    if environment is not None and environment.creates_processes_externally:
        if method == "spawn":
            raise BadInputError(
                "--strategy ddp_spawn starts its own processes; under torchrun or SLURM use --strategy ddp."
            )
        device = probe.strategy.root_device
        return Launch("external", world, environment.global_rank(), method, None, environment, device)
    return Launch("launcher", world, 0, method)


def ddp_strategy(launch: Launch, timeout_minutes: float) -> RankZeroLoadDDP | str:
    """The strategy object for the trainer: ours for a distributed run, Lightning's choice otherwise."""
    if not launch.distributed:
        return "auto"
    return RankZeroLoadDDP(start_method=launch.start_method, timeout=timedelta(minutes=timeout_minutes))


class Agreement:
    """Rank 0's per-model decision, broadcast to every rank of an externally started run.

    The process group is joined here, before the trainer exists (Lightning then reuses it), because the
    ranks must agree whether to train at all: a model that is up to date, locked or broken is skipped by
    every rank, not trained by some while the others wait.
    """

    def __init__(self, launch: Launch, timeout_minutes: float) -> None:
        self.launch = launch
        if launch.kind != "external" or torch.distributed.is_initialized():
            return
        from lightning_fabric.utilities.distributed import _init_dist_connection

        backend = "nccl" if launch.device.type == "cuda" else "gloo"
        if launch.device.type == "cuda":
            torch.cuda.set_device(launch.device)
        _init_dist_connection(
            launch.environment, backend, launch.global_rank, launch.world_size,
            timeout=timedelta(minutes=timeout_minutes),
        )  # fmt: skip

    def share(self, decision: dict[str, Any] | None) -> dict[str, Any]:
        """Rank 0 passes its decision, the others get it; without an external run, returns it as is."""
        if self.launch.kind != "external":
            return decision or {}
        box = [decision]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


@contextlib.contextmanager
def launching(launch: Launch, decision: dict[str, Any], threads: int | None) -> Iterator[None]:
    """Around rank 0's ``fit``: hand the decision to the ranks Lightning will start, and afterwards undo
    what the launch left behind (its process group, its environment), so the next model launches anew."""
    saved = {key: os.environ.get(key) for key in (*_LAUNCH_ENV, CHILD_RUN_ENV)}
    if launch.kind == "launcher":
        if launch.start_method == "popen":
            os.environ[CHILD_RUN_ENV] = json.dumps(decision)
        if threads:  # else Lightning sets cores / processes threads in every rank
            os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if launch.kind == "launcher":
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class _QueueReport:
    """A picklable stand-in for a report function: puts each report on a queue (spawned ranks)."""

    def __init__(self, queue) -> None:
        self.queue = queue

    def __call__(self, report: Any) -> None:
        self.queue.put(report)


@contextlib.contextmanager
def relayed(report: Callable | None, launch: Launch) -> Iterator[Callable | None]:
    """``report`` as the trainer's callbacks may carry it: under ``ddp_spawn`` the callbacks are pickled into
    the spawned ranks, so rank 0 there puts its reports on a queue that a thread here hands to ``report``."""
    if report is None or launch.kind != "launcher" or launch.start_method != "spawn":
        yield report
        return
    queue = multiprocessing.get_context("spawn").Queue()

    def forward() -> None:
        while (item := queue.get()) is not None:
            report(item)

    thread = threading.Thread(target=forward, daemon=True, name="epoch-report-relay")
    thread.start()
    try:
        yield _QueueReport(queue)
    finally:
        queue.put(None)
        thread.join(timeout=10)
