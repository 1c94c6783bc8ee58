"""scripts/kernel_smoke.py, the compute-sanitizer workload of scripts/gpu_check.sh: on the CPU it runs every CPU
kernel through the same cases, and it reports a mismatch with the reference (checked by breaking the reference)."""

import os
import subprocess
import sys

import pytest

from conftest import REQUIRE_OPS, fused_available

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "kernel_smoke.py")
sys.path.insert(0, os.path.dirname(SCRIPT))
import kernel_smoke  # noqa: E402

pytestmark = pytest.mark.skipif(not REQUIRE_OPS and not fused_available("clip_", "cpu"),
                                reason="needs the compiled CPU kernels")


def test_every_cpu_kernel_matches_on_every_case():
    r = subprocess.run([sys.executable, SCRIPT, "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all cases match the reference (cpu" in r.stdout


def test_a_wrong_result_is_reported(monkeypatch, capsys):
    real = kernel_smoke.ref.spectral_norm_power_iteration_
    monkeypatch.setattr(kernel_smoke.ref, "spectral_norm_power_iteration_",
                        lambda w, u, v, n, eps: real(w, u, v, n + 1, eps))
    monkeypatch.setattr(kernel_smoke, "failures", [])
    assert kernel_smoke.main(["--device", "cpu"]) == 1
    assert "MISMATCH spectral_norm_power_iteration_" in capsys.readouterr().err
