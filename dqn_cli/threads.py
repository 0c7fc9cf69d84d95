"""How dqn's threads share the cores: torch's OpenMP workers, ALE's emulator threads and the main thread."""

from __future__ import annotations

import os

# Spins (busy-wait iterations, a few microseconds) an idle OpenMP worker makes before it sleeps.
OPENMP_SPIN = "3000"


def configure_openmp() -> None:
    """Set before torch is imported: libgomp reads it once, when torch loads it.

    After a parallel region torch's OpenMP worker busy-waits for the next one, by default for libgomp's 300,000
    spins (about a millisecond). Between two forward passes that is the core ALE's emulator threads need; between
    the kernels of one gradient step it is what keeps the step fast (never sleeping, `OMP_WAIT_POLICY=PASSIVE`,
    made the step 15-20% slower here). A short spin keeps both: on this project's 2-core CPU, 4 evaluation games
    played 1,107 steps/s against 985 with one torch thread for the forward passes and 940 with two threads and the
    default spin, and a 4,000-step training run with 8 games took 28.2 s against 30.0 s (medians of alternating
    runs, benchmarks/RESULTS.md). A value the user set is kept.
    """
    os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN)
