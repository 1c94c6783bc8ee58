"""Checks that a C++ error from a compiled op reaches Python as an exception (used by scripts/gpu_check.sh).

Exit 0: the op raised TypeError as it should. Any other outcome (no exception, another one, or the process killed by
a signal, as seen with one GPU image's default compiler) is a failure.
"""
import torch

import wgan_ext  # noqa: F401  (loads the ops)

try:
    torch.ops.wgan_ext.clip_([torch.ones(3, dtype=torch.int64)], -1.0, 1.0)
except TypeError as e:
    print("raised as it should:", e)
else:
    raise SystemExit("the op accepted an int64 tensor; it must raise TypeError")
