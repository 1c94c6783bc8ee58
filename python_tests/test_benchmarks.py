"""Smoke runs of the benchmark scripts (quick mode): they run, check the fused result, and write their files.
Timings are not asserted here; they live in the benchmarks' own output."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import fused_available

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def run_bench(script, *args, cwd):
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, cwd=cwd)


def test_clip_benchmark_quick_writes_json_and_table(tmp_path):
    out = run_bench("bench_clip.py", "--device", "cpu", "--quick", "--out", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "clip-cpu.json").read_text())
    assert data["env"]["torch"] == torch.__version__ and data["env"]["commit"]
    assert data["settings"]["quick"] is True
    timed = [r for r in data["rows"] if "median_us" in r]
    variants = {"loop", "foreach"} | ({"fused", "fused+count", "clipper", "clipper-list", "clipper-flat"}
                                      if fused_available("clip_", "cpu") else set())
    cases = {r["case"] for r in timed}
    assert cases == {"dcgan64-critic", "500-small", "500x1", "8x16384"}
    for case in cases:
        assert {r["variant"] for r in timed if r["case"] == case} == variants
    assert all(r["median_us"] > 0 and r["vs_loop"] > 0 for r in timed)
    table = (tmp_path / "clip-cpu.md").read_text()
    assert "smoke run, not a measurement" in table and "| dcgan64-critic | loop |" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no GPU is visible")
def test_clip_benchmark_refuses_cuda_without_a_gpu(tmp_path):
    out = run_bench("bench_clip.py", "--device", "cuda", "--quick", "--out", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 1 and "no CUDA device" in out.stderr


def test_gradient_penalty_benchmark_quick_writes_json_and_table(tmp_path):
    out = run_bench("bench_gradient_penalty.py", "--device", "cpu", "--quick", "--out", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "gradient_penalty-cpu.json").read_text())
    timed = [r for r in data["rows"] if "median_us" in r]
    variants = {"plain"} | ({"fused"} if fused_available("gradient_norm_penalty", "cpu") else set())
    for case in ("toy-mlp", "dcgan64"):
        assert {r["variant"] for r in timed if r["case"] == case} == variants
    assert all(r["median_us"] > 0 for r in timed)
    if "fused" in variants:  # the fused penalty computes with fewer ops than the plain recipe, backward included
        for case in ("toy-mlp", "dcgan64"):
            rows = {r["variant"]: r for r in timed if r["case"] == case}
            assert rows["fused"]["events"] < rows["plain"]["events"]
            assert rows["fused"]["launch_bound_limit"] == rows["plain"]["events"] / rows["fused"]["events"]
    assert "smoke run, not a measurement" in (tmp_path / "gradient_penalty-cpu.md").read_text()


def test_spectral_norm_benchmark_quick_writes_json_and_table(tmp_path):
    out = run_bench("bench_spectral_norm.py", "--device", "cpu", "--quick", "--out", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "spectral_norm-cpu.json").read_text())
    timed = [r for r in data["rows"] if "forward_us" in r]
    variants = {"plain", "torch"} | ({"wgan_ext"} if fused_available("spectral_norm_power_iteration_", "cpu") else set())
    for case in ("toy-mlp", "dcgan64"):
        rows = {r["variant"]: r for r in timed if r["case"] == case}
        assert set(rows) == variants
        if "wgan_ext" in rows:  # fewer operator calls than torch's per-layer power method
            assert rows["wgan_ext"]["events"] < rows["torch"]["events"]
    pi = [r for r in data["rows"] if r.get("table") == "power_iteration"]
    assert {r["case"].split(" (")[0] for r in pi} == {"toy-mlp layers", "dcgan64 layers", "large"}
    assert {r["variant"] for r in pi} == variants - {"plain"}
    assert all(r["gb_per_s"] > 0 and r["of_copy_bw"] is None for r in pi)  # no copy roofline on the CPU
    text = (tmp_path / "spectral_norm-cpu.md").read_text()
    assert "smoke run, not a measurement" in text and "Power iteration alone" in text


def test_fused_optim_benchmark_quick_writes_json_and_table(tmp_path):
    out = run_bench("bench_fused_optim.py", "--device", "cpu", "--quick", "--out", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "fused_optim-cpu.json").read_text())
    assert data["env"]["torch"] == torch.__version__ and data["env"]["commit"]
    assert data["settings"]["quick"] is True and data["settings"]["cpu_threads"] >= 1
    timed = [r for r in data["rows"] if "median_us" in r]
    for case in ("dcgan64-critic", "toy-mlp", "tiny-mlp", "500x1"):
        for kind, op in (("rmsprop", "rmsprop_clip_step_"), ("adam", "adam_clip_step_")):
            variants = ({"loop", "foreach+foreach"} | ({"foreach+clip_"} if fused_available("clip_", "cpu") else set())
                        | ({"fused", "fused-list"} if fused_available(op, "cpu") else set()))
            assert {r["variant"] for r in timed if r["case"] == case and r["optimizer"] == kind} == variants
    assert all(r["median_us"] > 0 and r["vs_loop"] > 0 and r["vs_foreach"] > 0 for r in timed)
    table = (tmp_path / "fused_optim-cpu.md").read_text()
    assert "smoke run, not a measurement" in table and "| dcgan64-critic | rmsprop | loop |" in table


def test_quality_benchmark_quick_writes_json_and_table(tmp_path):
    out = run_bench("bench_quality.py", "--quick", "--datasets", "ring", "--modes", "gp,sn", "--jobs", "2",
                    "--out", str(tmp_path), "--name", "q", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "q-cpu.json").read_text())
    assert data["settings"]["quick"] is True and data["settings"]["jobs"] == 2
    assert {(r["mode"], r["dataset"]) for r in data["rows"]} == {("gp", "ring"), ("sn", "ring")}
    assert {r["mode"]: r["critic_activation"] for r in data["rows"]} == {"gp": "relu", "sn": "maxmin"}
    assert all(0 <= r["modes"] <= 8 and 0 <= r["hq"] <= 1 and r["w1"] > 0 and r["w1_floor"] > 0
               for r in data["rows"])
    table = (tmp_path / "q-cpu.md").read_text()
    assert "smoke run, not a measurement" in table
    assert "| ring | wgan_ext gp (1 seeds) |" in table and "| ring | published: PacGAN4 | 7.8 | 95.9 |" in table


def test_benchmark_command_runs_training_throughput_and_writes_results(tmp_path):
    """`python -m benchmarks --quick`: the end-to-end loops of every mode run, each beside the torch loop, and
    RESULTS.md is composed from the tables written."""
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--device", "cpu", "--only", "train",
                          "--out", str(tmp_path)], capture_output=True, text=True, cwd=BENCH.parent)
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "train-cpu.json").read_text())["rows"]
    for case in ("toy-mlp", "dcgan64"):
        for mode in ("clip", "gp", "sn"):
            got = {r["variant"]: r for r in rows if r["case"] == case and r["mode"] == mode}
            assert {"torch", "wgan_ext"} <= set(got), (case, mode, set(got))
            assert got["torch"]["vs_torch"] == 1.0
            assert all(r["it_per_s"] > 0 for r in got.values())
    assert all("trainer" in {r["variant"] for r in rows if r["case"] == case} for case in ("toy-mlp", "dcgan64"))
    for mode in ("gp", "sn"):  # the ResNet rows: the loops and the trainer in fp32 and bf16, images per second
        got = {r["variant"]: r for r in rows if r["case"] == "resnet32" and r["mode"] == mode}
        assert {"torch", "wgan_ext", "trainer", "trainer bf16"} <= set(got), (mode, set(got))
        assert all(r["real_per_s"] == pytest.approx(r["it_per_s"] * 5 * 4) for r in got.values())
    results = (tmp_path / "RESULTS.md").read_text()
    assert "## End-to-end training throughput" in results and "| toy-mlp | gp | torch |" in results
    assert "## Weight clipping" not in results  # only what is under --out
    # --compose-only runs nothing and picks up every table there
    (tmp_path / "clip-cpu.md").write_text("### clip on cpu\n\n| a |\n|---|\n| 1 |\n")
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--compose-only", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=BENCH.parent)
    assert out.returncode == 0 and ".py --device" not in out.stdout, out.stdout + out.stderr
    results = (tmp_path / "RESULTS.md").read_text()
    assert "## Weight clipping" in results and "## End-to-end training throughput" in results


def test_benchmark_command_rejects_an_unknown_benchmark(tmp_path):
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "bogus", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=BENCH.parent)
    assert out.returncode == 2 and "unknown benchmark(s) bogus" in out.stderr


def test_profile_steps_smoke_run_prints_every_section(tmp_path):
    script = BENCH.parent / "scripts" / "profile_steps.py"
    out = subprocess.run([sys.executable, str(script), "--device", "cpu", "--quick", "--steps", "1", "--rows", "3"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    for what in ("GP critic step, toy-mlp", "GP critic step, dcgan64", "SN critic forward, toy-mlp",
                 "SN critic forward, dcgan64", "trainer iteration, toy MLP, clip", "trainer iteration, toy MLP, sn"):
        assert f"=== {what}" in out.stdout, what
    assert "operator calls" in out.stdout and "Self CPU" in out.stdout


def test_committed_commands_name_repository_paths_relatively():
    sys.path.insert(0, str(BENCH))
    import common

    assert common._repo_relative(str(BENCH / "results")) == "benchmarks/results"
    assert common._repo_relative("/somewhere/else") == "<DIR>/else"  # another machine's folder: its name only
    assert common._repo_relative("--quick") == "--quick"
    for table in [*(BENCH / "results").glob("*.md"), *(BENCH / "results").glob("*.json"), BENCH / "RESULTS.md"]:
        text = table.read_text()  # no machine's absolute path in what is committed
        assert str(BENCH.parent) not in text and "--out /" not in text, table.name


def test_the_ema_benchmark_evaluates_the_raw_generator_and_each_average(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH / "bench_ema.py"), "--quick", "--datasets", "ring",
                          "--decays", "0.9,0.99", "--out", str(tmp_path)], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "ema-cpu.json").read_text())["rows"]
    assert [r["generator"] for r in rows] == ["raw", "ema 0.9", "ema 0.99"]
    assert all(0 <= r["hq"] <= 1 and r["w1"] > 0 for r in rows)
    assert "| ring | gp | ema 0.99 | 1 |" in (tmp_path / "ema-cpu.md").read_text()


def test_the_readme_quality_table_matches_the_committed_results():
    """The README's sample-quality rows are the means of the committed 5-seed tables, and its published rows those
    of bench_quality.PUBLISHED."""
    sys.path.insert(0, str(BENCH))
    import bench_quality

    readme = (BENCH.parent / "README.md").read_text()

    def fmt(x):
        return f"{round(x, 1):g}"

    for mode in ("gp", "sn", "clip"):
        rows = json.loads((BENCH / "results" / f"quality-{mode}-6000-cpu.json").read_text())["rows"]
        cells = []
        for ds in ("ring", "grid"):
            rs = [r for r in rows if r["dataset"] == ds and r["mode"] == mode]
            assert len(rs) == 5, (mode, ds)
            cells.append(f"{fmt(sum(r['modes'] for r in rs) / 5)} / {fmt(sum(100 * r['hq'] for r in rs) / 5)}")
        assert f"| wgan_ext {mode} | {cells[0]} | {cells[1]} |" in readme, (mode, cells)
    published = {(ds, m): f"{mo:g} / {hq:g}" for ds, m, mo, hq in bench_quality.PUBLISHED}
    for method in ("WGAN-GP (GDPP paper, Table 1)", "VEEGAN", "PacGAN4"):
        row = f"| published {method} | {published['ring', method]} | {published['grid', method]} |"
        assert row in readme, row


def _bench_module(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import importlib

    return importlib.import_module(name)


def test_the_time_scale_shortens_every_timing_window_and_is_recorded(tmp_path, monkeypatch):
    """WGAN_EXT_BENCH_TIME_SCALE (scripts/gpu_check.sh sets it so that every benchmark fits a lent GPU's minutes):
    the windows shrink by that factor, the results say so, a bad value is refused."""
    common = _bench_module("common", monkeypatch)
    clock = [0.0]
    monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])

    def calls_made(scale):
        monkeypatch.setenv("WGAN_EXT_BENCH_TIME_SCALE", scale)
        calls = [0]

        def fn():  # one call takes about 1 ms of the fake clock (2**-10 s: no rounding)
            calls[0] += 1
            clock[0] += 2.0 ** -10
        common.time_interleaved({"a": fn}, "cpu", min_run_time=0.5, rounds=5)
        return calls[0]
    # 3 warm-up calls, then 5 rounds of int(0.5 s x scale / 5 / 2**-10 s) calls: 102 at 1, 25 at 0.25
    assert calls_made("1") == 3 + 5 * 102 and calls_made("0.25") == 3 + 5 * 25
    out = run_bench("bench_clip.py", "--device", "cpu", "--quick", "--out", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "clip-cpu.json").read_text())["env"]["time_scale"] == 0.25
    assert "Timing windows × 0.25" in (tmp_path / "clip-cpu.md").read_text()
    for bad in ("0", "-1", "fast", "nan"):
        monkeypatch.setenv("WGAN_EXT_BENCH_TIME_SCALE", bad)
        with pytest.raises(SystemExit, match="WGAN_EXT_BENCH_TIME_SCALE must be a number"):
            common.time_scale()


def test_the_training_benchmark_keeps_what_is_done_when_a_later_mode_stops(tmp_path, monkeypatch):
    """A run cut off at a lent GPU's deadline keeps what finished: bench_train writes after every case and mode
    (the train_compile run is one case, whose sn compile may not fit)."""
    bench_train = _bench_module("bench_train", monkeypatch)
    plain_loop = bench_train.Loop

    def loop(case, mode, *args):
        if (case, mode) == ("dcgan64", "gp"):
            raise KeyboardInterrupt  # as a timeout's signal would stop it
        return plain_loop(case, mode, *args)
    monkeypatch.setattr(bench_train, "Loop", loop)
    with pytest.raises(KeyboardInterrupt):
        bench_train.run_device("cpu", True, tmp_path, cases=["toy-mlp", "dcgan64"])
    data = json.loads((tmp_path / "train-cpu.json").read_text())
    assert {(r["case"], r["mode"]) for r in data["rows"]} == {("toy-mlp", "clip"), ("toy-mlp", "gp"),
                                                             ("toy-mlp", "sn"), ("dcgan64", "clip")}
    assert data["settings"]["incomplete"] == "not yet run: dcgan64 gp, dcgan64 sn"
    assert "**Incomplete: not yet run: dcgan64 gp, dcgan64 sn**" in (tmp_path / "train-cpu.md").read_text()


@pytest.mark.parametrize("case", ["toy-mlp", "dcgan64", "resnet32"])
def test_the_training_benchmark_times_the_trainer_on_the_loops_models(case, monkeypatch):
    """The trainer rows compare with the loops only if the trainer builds the same critic and generator (sn's toy
    default critic, maxmin, is not the loops' ReLU MLP)."""
    bench_train = _bench_module("bench_train", monkeypatch)
    skip = ("ParametrizationList", "ModuleDict", "SpectralNorm", "_SpectralNorm")

    def layout(model):
        return ([type(m).__name__.removeprefix("Parametrized") for m in model.modules()
                 if type(m).__name__ not in skip],
                sorted(tuple(p.shape) for p in model.parameters()))
    for mode in bench_train.CASE_MODES[case]:
        g, d, _, _ = bench_train.build(case, mode, True, "cpu")
        trainer = bench_train.build_trainer(case, mode, True, "cpu")
        assert layout(trainer.critic) == layout(d), (case, mode)
        assert layout(trainer.generator) == layout(g), (case, mode)


def test_compare_builds_files_a_matched_variant_under_both_builds(monkeypatch):
    """compare_builds --match clipper-flat=clipper: the old build's clipper row and the new build's clipper-flat
    row of one case land under the same identity; other rows keep their own."""
    compare_builds = _bench_module("compare_builds", monkeypatch)
    matched = compare_builds.matched_variants(["clipper-flat=clipper"])
    old = compare_builds.keys_of({"case": "500x1", "variant": "clipper", "median_us": 1.0}, "before", matched)
    new = compare_builds.keys_of({"case": "500x1", "variant": "clipper-flat", "median_us": 1.0}, "after", matched)
    plain = compare_builds.keys_of({"case": "500x1", "variant": "loop", "median_us": 1.0}, "after", matched)
    assert old[1] == new[1] == (("case", "500x1"), ("variant", "clipper-flat <- clipper"))
    assert old[0] != new[0] and plain == [(("case", "500x1"), ("variant", "loop"))]
    with pytest.raises(SystemExit, match="AFTER=BEFORE"):
        compare_builds.matched_variants(["clipper-flat"])


def test_the_compile_rows_run_for_clip_and_sn_and_are_written_under_their_own_name(tmp_path):
    """scripts/gpu_check.sh's train_compile run: the toy case with torch.compile(mode="reduce-overhead") loops for
    clip and sn (none for gp: no double backward), written as train_compile-<device>.*, composed into RESULTS.md."""
    out = run_bench("bench_train.py", "--device", "cpu", "--quick", "--cases", "toy-mlp", "--compile",
                    "--name", "train_compile", "--out", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "train-cpu.json").exists()
    rows = json.loads((tmp_path / "train_compile-cpu.json").read_text())["rows"]
    assert not [r for r in rows if "FAILED" in r["variant"]], rows
    for mode in ("clip", "gp", "sn"):
        variants = {r["variant"] for r in rows if r["mode"] == mode}
        assert ("compile" in variants) == (mode != "gp"), (mode, variants)
        assert all(r["it_per_s"] > 0 for r in rows if r["mode"] == mode)
    assert "### train_compile on cpu" in (tmp_path / "train_compile-cpu.md").read_text()
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--compose-only", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=BENCH.parent)
    assert out.returncode == 0, out.stderr
    assert "## End-to-end training throughput with torch.compile loops" in (tmp_path / "RESULTS.md").read_text()
    out = run_bench("bench_train.py", "--device", "cpu", "--quick", "--name", "../x", "--out", str(tmp_path),
                    cwd=tmp_path)
    assert out.returncode != 0 and "--name" in out.stderr


def test_a_compile_loop_that_fails_is_reported_as_a_row_and_the_others_are_timed(tmp_path, monkeypatch):
    bench_train = _bench_module("bench_train", monkeypatch)

    class Broken(torch.nn.Module):  # the model's parameters, a forward that fails as a compiler error would
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args):
            raise RuntimeError("the compiler broke")

    def no_compile(model, mode=None):
        return Broken(model)
    monkeypatch.setattr(bench_train.torch, "compile", no_compile)
    bench_train.run_device("cpu", True, tmp_path, compile_=True, cases=["toy-mlp"], stem="t")
    rows = json.loads((tmp_path / "t-cpu.json").read_text())["rows"]
    failed = [r["variant"] for r in rows if "FAILED" in r["variant"]]
    assert failed == ["compile FAILED: RuntimeError: the compiler broke"] * 2
    assert {(r["mode"], r["variant"]) for r in rows if r["variant"] in ("torch", "wgan_ext")} == {
        (m, v) for m in ("clip", "gp", "sn") for v in ("torch", "wgan_ext")}
