"""MKL's kernels for the CPU's instruction set on AMD CPUs too (AVX2 on Zen 1-3, AVX-512 on Zen 4 and later).

torch's x86 wheels run float matrix products (a Nature CNN's 3136x512 layer, forward and backward) in Intel's MKL,
which chooses its kernels by the CPU's vendor: on an AMD CPU it runs its generic ones (`mkl_blas_def_sgemm_kernel_0_zen`
and `mkl_blas_def_sgemm_scopy_down16_bdz` in `perf`), whatever the CPU's instruction set. MKL asks one exported
function, `mkl_serv_intel_cpu_true`, whether the CPU is Intel's. `native/mkl_vendor.cpp` defines it to answer yes;
loaded into the process's global scope before torch, it is the definition torch's library binds to, and MKL then
chooses by the CPU's features (`mkl_blas_avx2_sgemm_kernel_nocopy_NN_b1` on a Zen 3, `mkl_blas_avx512_sgemm_kernel_0_b0`
on a Zen 4). The products are MKL's own kernels for this CPU's instruction set, as on an Intel CPU that has it; sums
may round differently from the generic kernels', as they do between any two CPUs.

On this project's 2-core AMD EPYC VMs (benchmarks/RESULTS.md, `benchmarks/mkl_kernels.py`), the 3136x512 layer's
backward products on two threads: 0.56-0.81 against 0.71-1.38 ms (Zen 3), 0.58-0.64 against 0.68-0.86 ms (Zen 4),
its forward product at batch 32 slower on both; a whole dqn gradient step 22.5-24.6 against 23.5-27.4 ms in four
alternating pairs of processes (Zen 4). `dqn` does it at start, before torch loads; the library is built once with
the C++ compiler into dqn's cache folder and checked once in a child process (matrix products against float64 ones,
at the shapes a Nature CNN uses). `DQN_MKL_BY_FEATURES=0` turns it off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("native") / "mkl_vendor.cpp"
FLAGS = ["-O2", "-shared", "-fPIC"]
AVX512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl"}  # what MKL's AVX-512 kernels use
AVX2 = {"avx2", "fma"}  # what its AVX2 kernels use: without them its generic kernels are what the CPU can run
SETTING = "DQN_MKL_BY_FEATURES"
SYMBOL = "mkl_serv_intel_cpu_true"


def reason_not_to() -> str | None:
    """Why MKL's kernels are left as MKL chooses them in this process; None where dqn should choose them."""
    from dqn_cli import native

    value = os.environ.get(SETTING, "1")
    if value.strip().lower() not in native.SWITCH:
        return f"{SETTING}={value!r} is not 0 or 1: unset it to let MKL choose by the CPU's features, 0 to leave it"
    if not native.SWITCH[value.strip().lower()]:
        return f"turned off by {SETTING}={value}"
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return "x86-64 Linux only"
    if native.cpu_field("vendor_id") != "AuthenticAMD":
        return "not an AMD CPU: MKL chooses its kernels by the CPU's features already"
    missing = AVX2 - set(native.cpu_field("flags").split())
    if missing:
        return f"this CPU has no {', '.join(sorted(missing))}: MKL's generic kernels are the fastest it can run"
    if "torch" in sys.modules:
        return "torch was loaded first (it must be loaded after: `dqn` does this at start)"
    return None


def kernels() -> str:
    """The instruction set whose kernels MKL chooses on this CPU once it chooses by features."""
    from dqn_cli import native

    return "AVX-512" if set(native.cpu_field("flags").split()) >= AVX512 else "AVX2"


def library_path() -> Path:
    from dqn_cli import native

    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    return native.cache_dir() / f"mkl_vendor-{key}.so"


def enable() -> str:
    """Make MKL choose its kernels by the CPU's features in this process, where that is wanted and the library builds
    and passes its check; say what was done or why not. Call it before anything imports torch."""
    reason = reason_not_to()
    if reason is not None:
        return reason
    from dqn_cli import native

    path = library_path()
    try:
        if not path.exists():
            native.compile_library(SOURCE, path, FLAGS)
        failure = native._checked(path, "dqn_cli.mkl")
        if failure is not None:
            return failure
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as error:
        return f"cannot build or load {path}: {error.strerror or error} (set DQN_NATIVE_CACHE to a writable folder)"
    except (native.NativeError, subprocess.SubprocessError) as error:
        return str(error)
    return f"MKL's {kernels()} kernels ({path})"


def self_check() -> None:
    """In a process that loaded the library before torch: the global scope answers MKL's question with it, and
    torch's float matrix products at a Nature CNN's shapes (forward and both backward products of its 3136x512
    layer, its head, an 8-observation batch), on one thread and two, agree with float64 products to float rounding.
    AssertionError otherwise."""
    import numpy as np
    import torch

    assert getattr(ctypes.CDLL(None), SYMBOL)() == 1, f"{SYMBOL} is not this library's"
    rng = np.random.default_rng(0)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for m, k, n in ((32, 3136, 512), (32, 512, 3136), (512, 32, 3136), (8, 3136, 512), (32, 512, 6)):
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            got = (torch.from_numpy(a) @ torch.from_numpy(b)).numpy()
            want = a.astype(np.float64) @ b.astype(np.float64)
            error = float(np.abs(got - want).max() / np.sqrt(k))
            assert error < 1e-5, f"{m}x{k} @ {k}x{n} on {threads} threads: off by {error:.2e} per sqrt(k)"


if __name__ == "__main__":  # `python -m dqn_cli.mkl LIBRARY`: the check `enable` runs in a child process
    ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL)
    self_check()
