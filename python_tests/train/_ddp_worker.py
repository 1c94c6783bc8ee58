"""Run by test_distributed.py under torchrun (one process per rank): trains small runs of every mode through the
trainer's own setup and writes what each rank ended with to RESULTS/rank<R>.pt for the test to compare.

    torchrun --standalone --nproc_per_node 2 python_tests/train/_ddp_worker.py RESULTS
"""

import os
import shutil
import sys
import weakref

import torch

from wgan_ext.train import Trainer, TrainingDiverged, config_from_args, distributed, pick_device
from wgan_ext.train.config import TrainConfig, resolve

MODES = ("clip", "gp", "sn")


def small(**kw) -> TrainConfig:
    base = dict(dataset="8gaussians", iters=3, batch_size=16, hidden=32, n_critic=2, progress=False, lr_decay="none",
                lr_d=1e-4, beta1=0.5,  # as test_distributed.small (see its ATOL)
                tensorboard=False, plots=False, n_samples=32)
    base.update(kw)
    return resolve(TrainConfig(**base))


def states(t: Trainer) -> dict:
    out = {"generator": t.generator.state_dict(), "critic": t.critic.state_dict()}
    if t.ema is not None:
        out["generator_ema"] = t.ema.state_dict()
    return out


def main(root: str) -> None:
    first = small(out=os.path.join(root, "unused"))
    ctx = distributed.setup(first, pick_device(first.device))
    rank = ctx.rank
    out = {"world_size": ctx.world_size, "runs": {}, "resume": {}}
    for mode in MODES:
        # a run folder per rank: rank 0 must write its own, every other rank nothing
        writes = mode == "gp"  # plots and TensorBoard in one mode (they cost time)
        t = Trainer(small(lipschitz=mode, out=os.path.join(root, f"{mode}-rank{rank}"), plots=writes,
                          tensorboard=writes, g_ema=0.99))
        last = t.train()
        out["runs"][mode] = {**states(t), "last": last}
        # a checkpoint written by 2 ranks at iteration 2, resumed by the test in 1 process
        t = Trainer(small(lipschitz=mode, iters=2, out=os.path.join(root, f"resume-{mode}")))
        t.train()
        out["resume"][mode] = states(t)
        # ... and resumed here on 2 processes to 3 (the test resumes a copy of the iteration-2 checkpoint)
        if rank == 0:
            shutil.copytree(os.path.join(root, f"resume-{mode}"), os.path.join(root, f"copy-{mode}"))
        torch.distributed.barrier()
        cfg, state = config_from_args(["--resume", os.path.join(root, f"resume-{mode}"), "--iters", "3"])
        again = Trainer(cfg, resume_state=state)
        again.train()
        out["resume_same"] = {**out.get("resume_same", {}), mode: states(again)}
    # the NaN guard stops every rank when only one sees non-finite values (and nobody hangs)
    if rank == 1:
        with torch.no_grad():
            next(t.critic.parameters()).fill_(float("nan"))
    try:
        t.check_finite({"iteration": 2, "w_estimate": 0.0})
        out["nan_guard"] = None
    except TrainingDiverged as e:
        out["nan_guard"] = str(e)
    # shutdown deletes the group (gloo's threads joined), nothing keeps it until exit: see distributed.shutdown
    group = weakref.ref(torch.distributed.group.WORLD)
    distributed.shutdown(wait=True)
    out["group_freed"] = group() is None
    torch.save(out, os.path.join(root, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
