"""How dqn's threads share the cores: torch's OpenMP workers, ALE's emulator threads and the main thread."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # imported when first used: `dqn --help` imports this module
    from concurrent.futures import ThreadPoolExecutor

T = TypeVar("T")
U = TypeVar("U")

# Spins (busy-wait iterations) an idle OpenMP worker makes before it sleeps: a tenth of libgomp's default.
OPENMP_SPIN = "30000"


def configure_openmp() -> None:
    """Set before torch is imported: libgomp reads it once, when torch loads it.

    After a parallel region torch's OpenMP worker busy-waits for the next one, by default for libgomp's 300,000
    spins (about a millisecond). Between two forward passes that is the core ALE's emulator threads need; between
    the kernels of one gradient step it is what keeps the step fast (never sleeping, `OMP_WAIT_POLICY=PASSIVE`,
    made the step 15-20% slower here). A shorter spin keeps both: on this project's 2-core CPU, 4 evaluation games
    played 1,107 steps/s against 985 with one torch thread for the forward passes and 940 with two threads and the
    default spin, and a 4,000-step training run with 8 games took 28.2 s at 3,000 spins against 30.0 s at the
    default. 30,000 spins then did better than 3,000 in the training phase (8 games, one gradient step per 4 env
    steps: +3.6% median over 8 alternating pairs of runs, 6 of them faster; both cores busier, 181-186% against
    172-176%) and in 8-game evaluations (3 alternating pairs of processes, median of 3 evaluations each:
    1,196/1,050/1,346 against 828/1,121/1,075 steps/s), while 100,000 and 300,000 were slower again
    (benchmarks/RESULTS.md). A value the user set is kept.
    """
    os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN)


TASKS = "/proc/self/task"  # the process's threads, on Linux


def started_threads(create: Callable[[], T]) -> tuple[T, list[int]]:
    """`create()` and the ids of the threads it started (ALE's emulator threads): those that appeared in
    `/proc/self/task` while it ran (call it from one thread at a time); no ids where there is no such folder."""
    if not os.path.isdir(TASKS):
        return create(), []
    before = set(os.listdir(TASKS))
    created = create()
    return created, sorted(int(tid) for tid in set(os.listdir(TASKS)) - before)


def batch_policy(thread_ids: list[int], on: bool) -> None:
    """Put these threads under Linux's `SCHED_BATCH` policy (`on`) or back under the default one.

    `SCHED_BATCH` threads keep their share of the cores, but one that wakes up does not preempt the thread running
    on its core. dqn turns it on for ALE's emulator threads while warm-up steps are sent ahead (`AleVecEnv.queue_next`),
    where the main thread wakes an emulator with every action it sends and, without it, often lost its core to it on
    the spot (py-spy put 40% of the main thread's active samples in `send`), though the main thread is the one that
    receives, preprocesses and stores every game's step. Warm-up A/Bs here: +4.9% and +3.4% steps/s in one process
    (8 games, chunks of 6,000 steps alternating, medians of 8 pairs each, 12 of the 16 faster, cores 1.72-1.75 busy
    against 1.65-1.70), +12% in whole benchmark-size runs (4 alternating pairs, all faster). Not beyond warm-up:
    after a forward pass torch's OpenMP worker spins on the other core (`configure_openmp`), and emulators that
    cannot preempt it wait for it; with the policy kept on in every phase, 8-game evaluations were 12% slower (4 of 4
    pairs of runs). Nothing happens where the policy is not available or a thread is gone.
    """
    if not hasattr(os, "SCHED_BATCH"):
        return
    policy = os.SCHED_BATCH if on else os.SCHED_OTHER
    for tid in thread_ids:
        with contextlib.suppress(OSError):  # gone already, or refused here: the thread keeps its policy
            os.sched_setscheduler(tid, policy, os.sched_param(0))


@functools.cache
def single_worker(name: str) -> ThreadPoolExecutor:
    """The process's one worker thread named `name`, started at first use (called from the main thread)."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


def _no_grad_on(threads: int, compute: Callable[[], T]) -> T:
    import torch

    torch.set_num_threads(threads)  # this thread's OpenMP team (the setting is per thread in libgomp)
    with torch.no_grad():  # grad mode is per thread too
        return compute()


def beside(side: Callable[[], T], main: Callable[[], U], *, device: Any) -> tuple[T, U]:
    """`side()` under `no_grad` on a second thread while `main()` runs on this one, each on half the torch threads.

    For a DQN gradient step: the target network's forward pass beside the online network's. At a batch of 32 a
    Nature-CNN forward pass ran 1.1-1.9x faster on two threads than on one here, not 2x, so two passes side by side
    on one thread each end sooner than one after the other on two (0.3-1 ms of a ~21 ms step). The step gives bit
    for bit what it gives with the passes one after the other on one thread or on two, and to float rounding what
    it gives on the other count: the BLAS and oneDNN may split a layer's sums by thread count (on an Intel Xeon
    the side pass matched one thread, Q-values within ~1e-8 of two; on an AMD EPYC it matched two threads, weights
    within ~4e-9 of one after 3 steps); `tests/test_memory_format.py` checks both on the machine it runs on.
    Sequential where there is nothing to split: on a GPU, or with a single torch thread.
    """
    import torch

    threads = torch.get_num_threads()
    if getattr(device, "type", device) != "cpu" or threads < 2:
        with torch.no_grad():
            side_result = side()
        return side_result, main()
    half = threads // 2
    with torch_threads(half):
        pending = single_worker("dqn-side-pass").submit(_no_grad_on, half, side)
        try:
            main_result = main()
        finally:
            side_result = pending.result()
    return side_result, main_result


# Multiply-adds of a training batch's forward pass under which a fully connected Q-network trains faster on one
# torch thread than on two (rl_zoo3's CartPole network, 256x256 at a batch of 64, is 4.3M).
SMALL_NETWORK_MACS = 16_000_000


def training_threads(q_net: Any, batch_size: int, device: Any = "cpu") -> int:
    """The torch threads a gradient step of `q_net` at `batch_size` should run on: one for a small network made of
    fully connected layers only, on CPU; else the process's count, which is also kept when the user set
    `OMP_NUM_THREADS`.

    Splitting a small layer's sums between threads costs more in handoffs than it saves: on this project's 2-core
    CPU rl_zoo3's CartPole gradient step took 1.74 ms on one thread against 2.53 on two (the target pass beside the
    online one), a whole 50k-step `dqn train --env CartPole-v1` 63 s against 76, on half the CPU. The two counts are
    even near 17M multiply-adds per forward pass (one thread against two: 256x256 at a batch of 256, 3.1 against
    3.4 ms; 512x512 at 64, 3.2 against 3.1), and two threads win above (512x512 at 128: 5.2 against 4.5; 1024x1024
    at 256: 30.7 against 19.3). Networks with any other layer that has weights (convolutions, recurrent or
    normalization layers) keep every thread, as does training on a GPU, where this was not measured."""
    import torch

    threads = torch.get_num_threads()
    if "OMP_NUM_THREADS" in os.environ or getattr(device, "type", device) != "cpu":
        return threads
    layers = [m for m in q_net.modules() if next(m.parameters(recurse=False), None) is not None]
    if not all(isinstance(m, torch.nn.Linear) for m in layers):
        return threads
    macs = batch_size * sum(m.in_features * m.out_features for m in layers)
    return 1 if macs < SMALL_NETWORK_MACS else threads


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with this thread's torch (OpenMP) team at `count` threads, and restore the count after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
