"""Benchmark of weight clipping: wgan_ext.clip_ against what WGAN code runs today.

Cases (float32, values ~ N(0, 0.02), clamped at c = 0.01 so a fair share of elements saturate):
  dcgan64-critic  the parameters of the DCGAN 64x64 critic (convolutions and BatchNorm, as the official code clamps)
  500-small       500 tensors of 16 to 4096 elements
  500x1           500 tensors of one element: nothing but the host's cost per call
  64MiB           8 tensors of 2,097,152 elements
Variants, each re-clamping the same tensors (the clamp is idempotent):
  loop            for p in params: p.data.clamp_(-c, c)      (the official WGAN code)
  foreach         torch._foreach_clamp_min_ then _foreach_clamp_max_ (two passes)
  fused           wgan_ext.clip_(params, c)
  fused+count     wgan_ext.clip_(params, c, return_counts=True) (the saturation from the same pass)
  clipper         a prebuilt wgan_ext.Clipper called (its cached launch plan: one op call, no list)
  clipper-list    the same Clipper with cache_plan=False (clip_ on the list every call)
  clipper-flat    a Clipper with flatten=True on a copy of the tensors (re-laid out as views of one buffer: one
                  autograd version counter to bump per call instead of one per tensor)
GB/s counts one read and one write per element; on CUDA, for the large case, it is also given as a fraction of
the measured device copy bandwidth (dst.copy_(src) on the same number of bytes).

    python benchmarks/bench_clip.py [--device cpu|cuda|all] [--quick] [--out DIR]
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import wgan_ext  # noqa: E402
from wgan_ext import _ops  # noqa: E402
from wgan_ext.train.models import DCGANCritic  # noqa: E402

C = 0.01


def dcgan64_critic_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of the DCGAN 64x64 critic with BatchNorm (nc 3, ndf 64), as the official code clamps them."""
    return [tuple(p.shape) for p in DCGANCritic(64).parameters()]


def cases(quick: bool) -> dict[str, list[tuple[int, ...]]]:
    g = torch.Generator().manual_seed(0)
    small = [(n,) for n in torch.randint(16, 4097, (500,), generator=g).tolist()]
    large = [(16384,)] * 8 if quick else [(2_097_152,)] * 8
    return {"dcgan64-critic": dcgan64_critic_shapes(), "500-small": small, "500x1": [(1,)] * 500,
            ("64MiB" if not quick else "8x16384"): large}


def variants(params: list[torch.Tensor], fused: bool) -> dict:
    def loop():
        for p in params:
            p.data.clamp_(-C, C)

    def foreach():
        torch._foreach_clamp_min_(params, -C)
        torch._foreach_clamp_max_(params, C)

    out = {"loop": loop, "foreach": foreach}
    if fused:
        clipper = wgan_ext.Clipper(params, c=C, impl="fused")
        out["fused"] = lambda: wgan_ext.clip_(params, C, impl="fused")
        out["fused+count"] = lambda: wgan_ext.clip_(params, C, return_counts=True, impl="fused")
        out["clipper"] = clipper
        if "cache_plan" in inspect.signature(wgan_ext.Clipper).parameters:  # (compare_builds runs older builds)
            out["clipper-list"] = wgan_ext.Clipper(params, c=C, impl="fused", cache_plan=False)
        if "flatten" in inspect.signature(wgan_ext.Clipper).parameters:
            own = [p.clone() for p in params]  # re-laid out in place: the other variants keep their own memory
            out["clipper-flat"] = wgan_ext.Clipper(own, c=C, impl="fused", flatten=True)
    return out


def check_fused(shapes, device) -> None:
    """The fused result must equal torch.clamp before any of its timings is believed."""
    g = torch.Generator().manual_seed(1)
    params = [(torch.randn(s, generator=g) * 0.02).to(device) for s in shapes]
    expected = [p.clamp(-C, C) for p in params]
    counts = wgan_ext.clip_(params, C, return_counts=True, impl="fused")
    assert all(torch.equal(p, e) for p, e in zip(params, expected)), "fused clip_ differs from torch.clamp"
    want = [int(((e <= -C) | (e >= C)).sum()) for e in expected]
    assert counts.tolist() == want, "fused saturation counts are wrong"


def run_device(device: str, quick: bool, out_dir: Path) -> Path:
    fused = _ops.has_kernel("clip_", device)
    min_run_time = 0.05 if quick else 1.0
    rows = []
    for case, shapes in cases(quick).items():
        params = [(torch.randn(s) * 0.02).to(device) for s in shapes]
        n_elem = sum(p.numel() for p in params)
        nbytes = n_elem * 4
        copy_gbs = None
        if fused:
            check_fused(shapes, device)
        # The roofline is the device's copy bandwidth; on the CPU dst.copy_(src) is no such bound (it ran at half
        # the clamp's speed here), so it is measured on CUDA only.
        if device == "cuda" and (nbytes >= 32 * 2**20 or quick):
            copy_gbs = common.measure_copy_bandwidth(nbytes, device, min_run_time)
        timings = {name: common.time_fn(fn, device, min_run_time) for name, fn in variants(params, fused).items()}
        loop_us, foreach_us = timings["loop"]["median_us"], timings["foreach"]["median_us"]
        for name, t in timings.items():
            gbs = 2 * nbytes / (t["median_us"] * 1e-6) / 1e9
            rows.append({
                "case": case, "variant": name, "tensors": len(params), "elements": n_elem,
                "median_us": t["median_us"], "iqr_us": t["iqr_us"], "measurements": t["measurements"],
                "vs_loop": loop_us / t["median_us"], "vs_foreach": foreach_us / t["median_us"],
                "gb_per_s": gbs, "copy_gb_per_s": copy_gbs,
                "of_copy_bw": gbs / copy_gbs if copy_gbs else None,
            })
        if not fused:
            rows.append({"case": case, "variant": "fused (no compiled kernel for this device)"})
    columns = [("case", "case", ""), ("variant", "variant", ""), ("tensors", "tensors", "d"),
               ("elements", "elements", ",d"), ("median_us", "median µs", ".1f"), ("iqr_us", "IQR µs", ".1f"),
               ("vs_loop", "× loop", ".2f"), ("vs_foreach", "× foreach", ".2f"), ("gb_per_s", "GB/s", ".1f"),
               ("of_copy_bw", "of copy BW", ".0%")]
    table = common.markdown_table(rows, columns)
    env = common.environment(device)
    settings = {"c": C, "dtype": "float32", "quick": quick, "min_run_time_s": min_run_time,
                "copy_bandwidth_note": "of copy BW = achieved GB/s / dst.copy_(src) GB/s on the same bytes"}
    _, md_path = common.write_results("clip", device, env, settings, rows, table, out_dir)
    return md_path


def main(argv=None) -> int:
    return common.run_cli(__doc__.splitlines()[0], run_device, argv)


if __name__ == "__main__":
    sys.exit(main())
