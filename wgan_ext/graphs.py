"""CUDA graphs for whole training steps (``GraphedStep``; the trainer's ``wgan-train --cuda-graphs``).

A toy-sized WGAN on a GPU is launch-bound: a critic step with a gradient penalty is a few hundred small kernels, each
costing more to launch from Python than to run. ``GraphedStep`` records one step (forward, the penalty's double
backward, backward, optimizer step, clamp) as a CUDA graph once and then replays it: one launch per step.

How a step is made replayable:
- Its inputs (the data batch, the noise, the penalty's alphas) are drawn outside the graph, in the order the eager
  step draws them, and copied into static buffers: the random streams and so the checkpoints stay those of eager.
- The first ``warmup`` calls run eagerly on a side stream (as PyTorch's CUDA-graph recipe asks: lazy initialization,
  optimizer state, autograd's buffers). Every call is a real training step; the capture call is replayed at once.
- Optimizers must be capturable (``capturable=True``: the step count lives on the GPU); a learning rate that changes
  during training must be a GPU tensor updated in place (``prepare_optimizer``).
- Nothing inside the step may synchronize with the host (an ``.item()``, a data-dependent check): capture refuses it.

Each step keeps its own memory pool (graphs replayed in another order than they were captured must not share one).
"""

from __future__ import annotations

import torch


class GraphsUnsupported(ValueError):
    """An optimizer or setting that CUDA graphs cannot capture; the message says which and why."""


class GraphCaptureError(RuntimeError):
    """Capturing a step failed (something in it synchronizes with the host or is not capturable); nothing of the
    failed capture ran, so the call can be repeated eagerly."""


def prepare_optimizer(opt: torch.optim.Optimizer, tensor_lr: bool) -> None:
    """Make a torch optimizer capturable: ``capturable=True``, step counts on the parameters' device and, with
    `tensor_lr`, each group's learning rate a 0-dim tensor there (set it with ``set_lr``). Call again after
    ``load_state_dict``, which brings back the saved groups."""
    for group in opt.param_groups:
        if "capturable" not in group:
            raise GraphsUnsupported(f"{type(opt).__name__} has no capturable mode; CUDA graphs need one "
                                    f"(torch.optim.RMSprop, Adam and most others have it)")
        group["capturable"] = True
        device = group["params"][0].device
        if tensor_lr and not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
        for p in group["params"]:
            state = opt.state.get(p, {})
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].to(device=p.device, dtype=torch.float32)


def set_lr(group: dict, lr: float) -> None:
    """Set a param group's learning rate: in place when it is a tensor (a captured step reads it from there)."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


def portable_state_dict(opt: torch.optim.Optimizer) -> dict:
    """``opt.state_dict()`` as the same optimizer without CUDA graphs would save it (float learning rates,
    ``capturable=False``, step counts on the CPU), so a checkpoint resumes with or without graphs, on any device.
    For an optimizer never prepared for graphs it is its state_dict() as it is. Synchronizes where a learning rate
    is a GPU tensor: for checkpoints, not for every step."""
    sd = opt.state_dict()
    groups = []
    for g in sd["param_groups"]:
        g = dict(g)
        if isinstance(g.get("lr"), torch.Tensor):
            g["lr"] = float(g["lr"].item())
        if "capturable" in g:
            g["capturable"] = False
        groups.append(g)
    state = {k: {**s, "step": s["step"].detach().cpu()} if isinstance(s.get("step"), torch.Tensor) else s
             for k, s in sd["state"].items()}
    return {"state": state, "param_groups": groups}


class GraphedStep:
    """``fn(*tensors)`` run eagerly for the first `warmup` calls, then captured once and replayed.

    `fn` must read its inputs only through its arguments and return tensors (any nesting of tuples, lists, dicts).
    After capture each call copies the inputs into the static input buffers, replays the graph and returns the same
    output tensors every time, overwritten by each replay: read (or clone) them before the next call.

    With ``capture=False`` (no CUDA) every call runs `fn` eagerly on the static input buffers: the same data flow
    without the graph, which is how the CPU tests check everything but the capture itself.
    """

    def __init__(self, fn, *, capture: bool, warmup: int = 3):
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (capture needs an eager call first), got {warmup}")
        self.fn = fn
        self.capture = capture
        self.warmup = warmup
        self.calls = 0
        self.replays = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self._inputs: list[torch.Tensor] | None = None
        self._outputs = None
        self._stream = None

    def __call__(self, *inputs: torch.Tensor):
        self.calls += 1
        if self.graph is None and (not self.capture or self.calls <= self.warmup):
            return self._eager(inputs)
        if self.graph is None:
            self._record()
        self._copy_in(inputs)
        self.graph.replay()
        self.replays += 1
        return self._outputs

    def _copy_in(self, inputs) -> None:
        if len(inputs) != len(self._inputs):
            raise ValueError(f"GraphedStep: called with {len(inputs)} inputs, recorded with {len(self._inputs)}")
        for i, (static, x) in enumerate(zip(self._inputs, inputs)):
            if x.shape != static.shape or x.dtype != static.dtype or x.device != static.device:
                raise ValueError(f"GraphedStep: input {i} is {tuple(x.shape)} {x.dtype} on {x.device}; the step was "
                                 f"recorded with {tuple(static.shape)} {static.dtype} on {static.device} (a graph "
                                 f"replays fixed shapes)")
            static.copy_(x)

    def _eager(self, inputs):
        if self._inputs is None:
            self._inputs = [x.detach().clone() for x in inputs]
        self._copy_in(inputs)
        if not self.capture:
            return self.fn(*self._inputs)
        # warm-up on a side stream, ordered after and before the work on the current stream
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=self._inputs[0].device)
        current = torch.cuda.current_stream(self._inputs[0].device)
        self._stream.wait_stream(current)
        with torch.cuda.stream(self._stream):
            out = self.fn(*self._inputs)
        current.wait_stream(self._stream)
        return out

    def _record(self) -> None:
        # capture runs nothing, so the buffers' contents do not matter here: the caller copies the inputs in and
        # replays. On the inputs' device (torch's default capture stream belongs to the device current when it was
        # first made, so with cuda:N it would record nothing of this step), on the warm-up stream (as torch asks
        # when a capture follows side-stream warm-ups), and with errors local to this thread: a DataLoader's
        # pin-memory thread allocating meanwhile must not invalidate the capture ("global" would).
        device = self._inputs[0].device
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(device):
            previous = torch.cuda.current_stream(device)
            try:
                with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
                    self._outputs = self.fn(*self._inputs)
            except Exception as e:
                torch.cuda.set_stream(previous)  # a failed capture_end leaves the capture stream current
                name = getattr(self.fn, "__name__", "the step")
                raise GraphCaptureError(f"CUDA graph capture of {name} failed ({type(e).__name__}: {e}). Something "
                                        f"in the step synchronizes with the host (.item(), a data-dependent check, a "
                                        f"CPU tensor) or is not capturable; run it without CUDA graphs (wgan-train: "
                                        f"--cuda-graphs off)") from e
        self.graph = graph
