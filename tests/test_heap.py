"""The objects a run sets up stay out of the cyclic collector's passes while it steps, and come back afterwards."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from dqn_cli.heap import frozen_setup


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_setup_is_frozen_in_the_block_while_new_cycles_are_collected() -> None:
    garbage_before = cycle()  # unreachable already: the block's first collection frees it, not freezes it
    kept = Node()
    with frozen_setup():
        assert garbage_before() is None
        assert gc.get_freeze_count() > 0 and gc.is_tracked(kept)
        made_inside = cycle()
        gc.collect()
        assert made_inside() is None, "a cycle made in the block is still collected"
    assert gc.get_freeze_count() == 0


def test_an_error_in_the_block_still_unfreezes() -> None:
    with pytest.raises(KeyError), frozen_setup():
        raise KeyError("stop")
    assert gc.get_freeze_count() == 0


def test_training_its_evaluations_and_dqn_eval_run_frozen(dqn, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dqn_cli import callbacks, evaluate, play

    frozen: list[int] = []
    steps = [0]
    original_step, original_play = callbacks.ProgressCallback._on_step, play.play

    def on_step(self: callbacks.ProgressCallback) -> bool:
        if steps[0] % 100 == 0:  # every 100th step: Python 3.11 counts the frozen objects one by one (~28 ms)
            frozen.append(gc.get_freeze_count())
        steps[0] += 1
        return original_step(self)

    def playing(*args: object, **kwargs: object) -> play.Episodes:
        frozen.append(gc.get_freeze_count())
        return original_play(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(callbacks.ProgressCallback, "_on_step", on_step)
    monkeypatch.setattr(callbacks, "play", playing)
    monkeypatch.setattr(evaluate, "play", playing)
    result = dqn("train", "--env", "CartPole-v1", "-n", "600", "--set", "learning_starts=100", "--eval-freq", "300",
                 "--eval-episodes", "2", "--seed", "0", "--no-progress", "--no-tensorboard")  # fmt: skip
    assert result.code == 0, result.err
    assert steps[0] > 600 and min(frozen) > 100_000
    assert gc.get_freeze_count() == 0
    frozen.clear()
    evaluated = dqn("eval", "--run", str(workdir / "logs/dqn/CartPole-v1_1"), "--episodes", "1")
    assert evaluated.code == 0, evaluated.err
    assert len(frozen) == 1 and frozen[0] > 100_000 and gc.get_freeze_count() == 0
