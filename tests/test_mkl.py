"""MKL's kernels chosen by the CPU's features on AMD CPUs: only where they run, checked once, off with one setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dqn_cli import mkl, native

ZEN3_FLAGS = "fpu sse2 avx avx2 fma bmi2 vaes"
ZEN4_FLAGS = ZEN3_FLAGS + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16"

# A fresh process: `enable` before torch, then what it says, what the global scope answers, and one product's error.
PROBE = """
import ctypes, json, sys
from dqn_cli import mkl, native
said = mkl.enable()
import numpy as np, torch
a, b = np.random.default_rng(0).standard_normal((2, 32, 3136), dtype=np.float32)
error = float(np.abs((torch.from_numpy(a) @ torch.from_numpy(b.T)).numpy() - a.astype(float) @ b.T.astype(float)).max())
symbol = getattr(ctypes.CDLL(None), mkl.SYMBOL, None)
print(json.dumps({"said": said, "answer": None if symbol is None else symbol(), "error": error}))
"""


def probe(tmp_path: Path, **env: str) -> dict[str, object]:
    environment = {**os.environ, "DQN_NATIVE_CACHE": str(tmp_path / "cache"), **env}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=environment, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def this_cpu_wants_it() -> bool:
    flags = set(native.cpu_field("flags").split())
    return sys.platform.startswith("linux") and native.cpu_field("vendor_id") == "AuthenticAMD" and flags >= mkl.AVX2


def test_dqn_lets_mkl_choose_its_kernels_by_features_on_amd_cpus_with_avx2(tmp_path: Path) -> None:
    result = probe(tmp_path)
    assert result["error"] < 1e-3  # type: ignore[operator]
    if this_cpu_wants_it():
        assert str(result["said"]).startswith(f"MKL's {mkl.kernels()} kernels")
        assert result["answer"] == 1  # what torch's MKL finds when it asks whether the CPU is Intel's
        built = sorted((tmp_path / "cache").glob("mkl_vendor-*.so"))
        assert len(built) == 1 and json.loads(built[0].with_suffix(".json").read_text()) == {"failure": None}
    else:  # MKL's own answer, if its symbol is global at all, is MKL's business
        assert str(result["said"]).startswith(("not an AMD CPU", "this CPU has no", "x86-64 Linux only"))


def test_dqn_mkl_by_features_0_leaves_mkl_as_it_is(tmp_path: Path) -> None:
    result = probe(tmp_path, DQN_MKL_BY_FEATURES="0")
    assert result["said"] == "turned off by DQN_MKL_BY_FEATURES=0" and result["answer"] != 1  # MKL's own, if any
    assert not (tmp_path / "cache").exists()


def test_a_setting_that_is_not_a_switch_says_what_to_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DQN_MKL_BY_FEATURES", "fast")
    assert mkl.enable() == (
        "DQN_MKL_BY_FEATURES='fast' is not 0 or 1: unset it to let MKL choose by the CPU's features, 0 to leave it"
    )


@pytest.mark.parametrize(
    ("vendor", "flags", "reason"),
    [
        ("GenuineIntel", ZEN4_FLAGS, "not an AMD CPU: MKL chooses its kernels by the CPU's features already"),
        ("AuthenticAMD", "fpu sse2 avx", "this CPU has no avx2, fma: MKL's generic kernels are the fastest it can run"),
        ("AuthenticAMD", ZEN3_FLAGS, "torch was loaded first"),  # as in this test process
        ("AuthenticAMD", ZEN4_FLAGS, "torch was loaded first"),
    ],
)
def test_it_is_chosen_only_where_mkl_would_otherwise_run_slower_kernels(
    monkeypatch: pytest.MonkeyPatch, vendor: str, flags: str, reason: str
) -> None:
    import torch  # noqa: F401  (loaded, as it is in every test process)

    if not sys.platform.startswith("linux"):
        pytest.skip("x86-64 Linux only")
    monkeypatch.delenv("DQN_MKL_BY_FEATURES", raising=False)
    monkeypatch.setattr(native, "cpu_field", {"vendor_id": vendor, "flags": flags}.get)
    assert str(mkl.reason_not_to()).startswith(reason)


@pytest.mark.parametrize(("flags", "kernels"), [(ZEN3_FLAGS, "AVX2"), (ZEN4_FLAGS, "AVX-512")])
def test_it_names_the_kernels_mkl_chooses_by_the_cpus_features(
    monkeypatch: pytest.MonkeyPatch, flags: str, kernels: str
) -> None:
    monkeypatch.setattr(native, "cpu_field", {"vendor_id": "AuthenticAMD", "flags": flags}.get)
    assert mkl.kernels() == kernels


def test_a_library_that_fails_its_check_is_not_loaded_and_not_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = tmp_path / "mkl_vendor.cpp"
    wrong.write_text(mkl.SOURCE.read_text().replace("return 1;", "return 0;"))  # answers "not Intel's"
    monkeypatch.setattr(mkl, "SOURCE", wrong)
    monkeypatch.setenv("DQN_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mkl, "reason_not_to", lambda: None)  # as on an AMD CPU with AVX2, before torch
    said = mkl.enable()
    assert said.startswith("the self-check failed (AssertionError: mkl_serv_intel_cpu_true is not this library")
    marker = mkl.library_path().with_suffix(".json")
    assert json.loads(marker.read_text()) == {"failure": said}

    def no_second_check(*args: object, **kwargs: object) -> None:
        raise AssertionError("checked again")

    monkeypatch.setattr(subprocess, "run", no_second_check)
    assert mkl.enable() == said


def test_help_builds_nothing_and_a_command_chooses_the_kernels_before_it_runs(tmp_path: Path) -> None:
    environment = {**os.environ, "DQN_NATIVE_CACHE": str(tmp_path / "cache")}

    def dqn(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dqn_cli", *args], capture_output=True, text=True, env=environment)

    assert dqn("--help").returncode == 0 and dqn("train", "-h").returncode == 0
    assert not (tmp_path / "cache").exists()  # help needs no torch, so no first-run build and check
    assert dqn("eval", "--run", str(tmp_path / "missing")).returncode == 2
    built = sorted((tmp_path / "cache").glob("mkl_vendor-*.so"))
    assert len(built) == (1 if this_cpu_wants_it() else 0)
