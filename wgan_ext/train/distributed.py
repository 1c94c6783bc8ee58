"""Data-parallel training across processes (torchrun): what the trainer needs from torch.distributed, and no more.

    launch_info() -> (rank, world_size, local_rank)   from torchrun's RANK / WORLD_SIZE / LOCAL_RANK (0, 1, 0 without)
    pick_device(name) -> torch.device                  --device resolved; under torchrun cuda means cuda:LOCAL_RANK
    setup(config) -> Distributed                       check the config against the world size, init the process
                                                       group (gloo on CPU, NCCL on CUDA) when WORLD_SIZE > 1
    Distributed.current()                              the process group already set up (by setup or by the user),
                                                       or the single-process context
    shutdown()                                         destroy the process group set up here

How the trainer splits the work (the design, and why):

* ``--batch-size`` is the global batch. Every rank draws the same global batch of real data, noise and
  gradient-penalty alphas (the same seeds, the same streams) and keeps its own contiguous slice of
  batch_size / world_size samples. A run on N processes therefore sees exactly the samples of the single-process
  run, and the data/noise stream positions in a checkpoint mean the same thing under any world size.
* Gradients are averaged by hand: after ``loss.backward()`` and before ``optimizer.step()`` one all-reduce of the
  flattened gradients of the model being updated, divided by the world size. Every loss is a mean over the local
  slice and the slices are equal-sized, so the average is the gradient of the global mean loss, the one the single
  process computes. We do not wrap the models in DistributedDataParallel: the gradient penalty takes an inner
  ``autograd.grad(create_graph=True)`` through the critic, and with DDP's reducer hooks that double backward is
  the well-known trap (the inner gradient is local; only the outer backward may all-reduce, pytorch#47562); the
  critic is also called several times per step (real, fake, interpolates) and the generator step runs it with
  frozen parameters, both awkward for DDP's unused-parameter bookkeeping. One explicit all-reduce per optimizer
  step works the same for clip, gp and sn and is easy to read. (It gives up DDP's overlap of communication with
  backward; the models here are small.)
* Replicas stay identical: parameters and buffers are broadcast from rank 0 at the start (also after resuming),
  every rank applies the same averaged gradient with the same optimizer state, clipping is elementwise on
  identical parameters, and spectral norm's u/v buffers are updated by the same deterministic power iteration
  on identical weights. BatchNorm's running statistics (the only state computed from the local slice) are
  broadcast from rank 0 after each generator iteration; in training mode BatchNorm normalizes with the local
  slice's statistics, as DDP does without SyncBatchNorm, so runs with BatchNorm are not equal to a single process.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from .config import TrainConfig
from .errors import ConfigError

_OWNED = False  # whether setup() created the process group (then shutdown() destroys it)
_TIMEOUT = timedelta(minutes=10)  # joining the group, and any collective


def launch_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as torchrun sets them; (0, 1, 0) in a plain process."""
    def read(name, default):
        value = os.environ.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None
    world = read("WORLD_SIZE", 1)
    rank = read("RANK", 0)
    local = read("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} and WORLD_SIZE={world} from the environment are inconsistent")
    return rank, world, local


def pick_device(name: str) -> torch.device:
    """The training device, a CUDA one always with its index (torch.cuda.set_device refuses a bare "cuda"): auto
    and cuda mean the current CUDA device, and under torchrun with several processes cuda:LOCAL_RANK."""
    _, world, local_rank = launch_info()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device: {name!r} asked for, but torch sees no CUDA device (use auto or cpu)")
    if device.type == "cuda" and world > 1:
        if device.index is not None:
            raise ConfigError(f"--device: {name!r}: under torchrun each process takes cuda:LOCAL_RANK; use --device "
                              f"cuda or auto (and CUDA_VISIBLE_DEVICES to choose the GPUs)")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but torch sees {torch.cuda.device_count()} CUDA device(s): "
                              f"start at most that many processes per node")
        device = torch.device("cuda", local_rank)
    elif device.type == "cuda":
        count = torch.cuda.device_count()
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        elif device.index >= count:
            raise ConfigError(f"--device: {name!r}, but torch sees {count} CUDA device(s): cuda:0 to cuda:{count - 1}")
    return device


@dataclass(frozen=True)
class Distributed:
    """Rank and world size of this process, and the few collectives the trainer uses (no-ops for one process)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Distributed:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, global_batch: int) -> slice:
        """This rank's slice of a global batch (equal-sized, contiguous)."""
        if global_batch % self.world_size:
            raise ConfigError(f"--batch-size: {global_batch} is not divisible by the world size {self.world_size} "
                              f"(the batch size is global: each of the {self.world_size} processes takes an "
                              f"equal share)")
        n = global_batch // self.world_size
        return slice(self.rank * n, (self.rank + 1) * n)

    def average_gradients(self, params) -> None:
        """Replace each parameter's .grad by its mean over the ranks (one all-reduce of the flattened grads)."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self.world_size)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Elementwise mean of a tensor over the ranks (a copy)."""
        if not self.enabled:
            return values
        out = values.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.div_(self.world_size)

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """The ranks' equal-sized tensors concatenated along dim 0 in rank order (the global batch's order)."""
        if not self.enabled:
            return values
        parts = [torch.empty_like(values) for _ in range(self.world_size)]
        dist.all_gather(parts, values.contiguous())
        return torch.cat(parts)

    def any(self, flag: bool, device) -> bool:
        """True on every rank when `flag` is true on any (so that all ranks stop together, never hang)."""
        return self.any_of([flag], device)[0]

    def any_of(self, flags: list[bool], device) -> list[bool]:
        """Each flag true on every rank when it is true on any: one all-reduce for all of them."""
        if not self.enabled:
            return [bool(f) for f in flags]
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def broadcast_state(self, module: nn.Module, buffers_of=None) -> None:
        """Copy rank 0's parameters and buffers into every rank's `module` (only the buffers of submodules of the
        types `buffers_of`, and no parameters, when it is given)."""
        if not self.enabled:
            return
        with torch.no_grad():
            if buffers_of is None:
                tensors = list(module.parameters()) + list(module.buffers())
            else:
                tensors = [b for m in module.modules() if isinstance(m, buffers_of) for b in m.buffers(recurse=False)]
            for t in tensors:
                dist.broadcast(t.data, src=0)


def backend_for(config: TrainConfig, device: torch.device) -> str:
    if config.dist_backend != "auto":
        if config.dist_backend == "nccl" and device.type != "cuda":
            raise ConfigError(f"--dist-backend: 'nccl' needs CUDA devices, but the device is {device} (use gloo)")
        return config.dist_backend
    return "nccl" if device.type == "cuda" else "gloo"


def setup(config: TrainConfig, device: torch.device) -> Distributed:
    """Under torchrun with WORLD_SIZE > 1: check the config, then join the process group (gloo on CPU, NCCL on
    CUDA, or --dist-backend). A single process, or a group already initialized by the caller, is left alone."""
    global _OWNED
    if dist.is_available() and dist.is_initialized():
        ctx = Distributed.current()
        ctx.shard(config.batch_size)
        return ctx
    rank, world, _ = launch_info()
    if world == 1:
        return Distributed()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1, but this torch build has no torch.distributed")
    ctx = Distributed(rank, world)
    ctx.shard(config.batch_size)  # fails on every rank before any rank waits for the others
    backend = backend_for(config, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # the group's store is the one torchrun's agent keeps for the whole job (or rank 0's), under a namespace fresh
    # for this start of the group: see fresh_namespace
    store, _, _ = next(dist.rendezvous("env://", timeout=_TIMEOUT))
    store = dist.PrefixStore(f"wgan_ext/{fresh_namespace(store, rank, world, _TIMEOUT)}", store)
    # before the group exists, so that nothing imported later holds on to it: see shutdown
    import torch.distributed.nn  # noqa: F401
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world, timeout=_TIMEOUT,
                            device_id=device if backend == "nccl" else None)
    _OWNED = True
    return ctx


def fresh_namespace(store: dist.Store, rank: int, world: int, timeout: timedelta) -> str:
    """A name that every rank of this start of the group agrees on and that no earlier start used.

    Why: since torch 2.5 torchrun's agent keeps one TCPStore for the whole job and hands it to each restarted
    worker group as it is (pytorch#135712). The keys a killed group wrote are still there, so a restarted rank may
    read the previous rank 0's address from gloo's (or NCCL's) rendezvous keys before the new rank 0 overwrites it,
    and connect to a dead port: "Gloo connectFullMesh failed ... Connection refused", one restart lost each time.
    torch's own isolation by TORCHELASTIC_RESTART_COUNT is per node, not global, so it is no cure either.

    How: rank 0 draws a random generation id and publishes it; every other rank joins the generation it reads with
    a random token of its own and waits (briefly, then reads again) for rank 0 to acknowledge that token. A stale
    generation is never acknowledged (its rank 0 is gone), a fresh one always is, and the acknowledgement names the
    generation: all ranks leave with rank 0's fresh id."""
    deadline = time.monotonic() + timeout.total_seconds()
    if rank == 0:
        gen = uuid.uuid4().hex
        store.set("generation", gen)
        for r in range(1, world):
            join = f"{gen}/join/{r}"
            store.wait([join], timeout)
            store.set(f"ack/{store.get(join).decode()}", gen)
        return gen
    token = uuid.uuid4().hex
    while True:
        store.wait(["generation"], timeout)
        gen = store.get("generation").decode()
        store.set(f"{gen}/join/{rank}", token)
        try:
            store.wait([f"ack/{token}"], timedelta(seconds=1))
        except dist.DistStoreError:
            if time.monotonic() > deadline:
                raise
            continue  # a generation whose rank 0 is gone, or a new one not yet published
        return store.get(f"ack/{token}").decode()


def shutdown(wait: bool = False) -> None:
    """Destroy the process group if setup() created it; `wait`: after a barrier (a run that ended normally on
    every rank), so that every rank is done with the group before any rank closes its connections.

    destroy_process_group() must really free the group, and that is why setup() imports torch.distributed.nn
    first. Gloo's worker threads stop only when the group object is deleted (gloo's shutdown() does nothing), and
    torch.distributed.nn's functions take ``group=group.WORLD`` as a default argument, evaluated on import: imported
    after init_process_group (torch.optim does it lazily, through torch._dynamo) they keep the group, and its
    threads, alive until the interpreter exits. A worker thread that frees a finished work then (seen: the final
    barrier, just after the main thread saw it complete, and with it the last all-reduce and its tensors) needs
    the GIL to release a tensor's Python object; a finalizing interpreter ends the thread instead, inside a
    noexcept destructor, and the process aborts: "terminate called without an active exception" after "done", and
    torchrun reports the finished run as failed. A group nothing else holds is deleted here, its threads joined,
    while the interpreter is alive."""
    global _OWNED
    if _OWNED and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
    _OWNED = False
