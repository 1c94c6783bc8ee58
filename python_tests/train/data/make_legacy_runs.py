"""Makes the legacy-run test data in python_tests/train/data/<commit>/: with the code of that commit, for each
configuration below, the checkpoint a 6-iteration run writes at generator iteration 3, and that run's metrics and
final models. python_tests/train/test_legacy_runs.py checks that today's code (a) gives the same
metrics and models from the same seeds and (b) resumes the old checkpoint to the same result.

    python python_tests/train/data/make_legacy_runs.py python_tests/train/data/<commit>     # run at <commit>, CPU

It imports only what both the old flat layout and the current one export from ``wgan_ext.train``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import torch

from wgan_ext.train import Trainer, TrainConfig, resolve

TOY = dict(dataset="8gaussians", hidden=16, depth=2, batch_size=32, n_critic=2)
DIGITS = dict(dataset="digits", image_size=32, model="dcgan", ngf=8, ndf=8, nz=16, batch_size=16, n_critic=2)
CONFIGS = {
    "clip": dict(TOY, lipschitz="clip"),
    "clip-before": dict(TOY, lipschitz="clip", clip_order="before"),
    "clip-fused": dict(TOY, lipschitz="clip", fused_optimizer=True, optimizer="adam"),
    "gp": dict(TOY, lipschitz="gp"),
    "sn": dict(TOY, lipschitz="sn", sn_power_iterations=2),
    "clip-dcgan": dict(DIGITS, lipschitz="clip"),
    "gp-dcgan": dict(DIGITS, lipschitz="gp"),
    "sn-dcgan": dict(DIGITS, lipschitz="sn"),
}
RUN = dict(iters=6, checkpoint_every=3, plots=False, tensorboard=False, progress=False, n_samples=16, out="run")


def config(name: str, **kw) -> TrainConfig:
    return resolve(TrainConfig(**{**CONFIGS[name], **RUN, **kw}))


def metrics(run: str) -> list[dict]:
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in f]


def main(dest: str) -> None:
    dest = os.path.abspath(dest)
    os.makedirs(dest, exist_ok=True)
    here = os.getcwd()
    for name in CONFIGS:
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)  # run folders relative to it: no machine's path is recorded in the checkpoints
            try:
                t = Trainer(config(name))
                save = t.save

                def save_and_keep(t=t, save=save, name=name):  # the checkpoint at iteration 3, before 6 replaces it
                    path = save()
                    if t.iteration == 3:
                        shutil.copy(path, os.path.join(dest, f"{name}-it3.pt"))
                    return path

                t.save = save_and_keep
                t.train()
                with open(os.path.join(dest, f"{name}-metrics.json"), "w") as f:
                    json.dump(metrics("run"), f, indent=1)
                torch.save({"generator": t.generator.state_dict(), "critic": t.critic.state_dict()},
                           os.path.join(dest, f"{name}-final.pt"))
            finally:
                os.chdir(here)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    with open(os.path.join(dest, "made_with.json"), "w") as f:
        json.dump({"commit": commit, "torch": str(torch.__version__), "python": platform.python_version(),
                   "machine": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                   "threads": torch.get_num_threads(), "configs": CONFIGS, "run": RUN}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
