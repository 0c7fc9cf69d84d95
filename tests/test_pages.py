"""A replay buffer's fresh pages are populated on a side thread ahead of its writes, without touching what is there."""

from __future__ import annotations

import ctypes
import mmap
import pickle
import sys

import numpy as np
import pytest
from gymnasium import spaces

from dqn_cli import pages
from dqn_cli.buffers import CompactReplayBuffer
from dqn_cli.pages import CHUNK, PAGE, PagesAhead

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or pages._madvise() is None, reason="MADV_POPULATE_WRITE is Linux's"
)


def fresh(size: int) -> np.ndarray:
    """`size` bytes of anonymous memory straight from the kernel: no page in memory until it is touched (an array
    from malloc may reuse memory the process touched before)."""
    return np.frombuffer(mmap.mmap(-1, size), dtype=np.uint8)


def resident(array: np.ndarray, start: int, end: int) -> np.ndarray:
    """Per 4 KiB page of array bytes [start, end): whether it is in memory (mincore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    first = array.ctypes.data + start
    first -= first % PAGE
    length = array.ctypes.data + end - first
    vec = np.zeros((length + PAGE - 1) // PAGE, dtype=np.uint8)
    assert libc.mincore(first, length, vec.ctypes.data) == 0, ctypes.get_errno()
    return (vec & 1).astype(bool)


@linux_only
def test_pages_ahead_of_the_writes_are_populated_and_keep_their_contents() -> None:
    array = fresh(8 * CHUNK)
    assert not resident(array, 2 * CHUNK, 8 * CHUNK).any()
    array[: CHUNK // 2] = np.arange(CHUNK // 2) % 251  # the writer got there first
    ahead = PagesAhead(array)
    ahead.written(CHUNK // 2)
    ahead.wait()
    assert resident(array, 0, CHUNK + CHUNK // 2).all()  # one chunk beyond the writes
    assert not resident(array, 3 * CHUNK, 8 * CHUNK).any()  # not the whole array at once
    assert np.array_equal(array[: CHUNK // 2], np.arange(CHUNK // 2) % 251)
    ahead.written(CHUNK // 2 + 1)  # still a chunk ahead: nothing more
    ahead.wait()
    assert not resident(array, 3 * CHUNK, 8 * CHUNK).any()
    ahead.written(6 * CHUNK)  # the writes jumped ahead: population restarts from them
    ahead.wait()
    assert resident(array, 6 * CHUNK, 7 * CHUNK).all()
    assert not resident(array, 3 * CHUNK, 5 * CHUNK).any()
    assert not array[CHUNK // 2 :].any()  # (reading maps the kernel's zero page: mincore would count it resident)


@linux_only
def test_the_replay_ring_is_populated_ahead_of_its_first_pass_and_not_after_loading() -> None:
    space = spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8)
    buffer = CompactReplayBuffer(20_000, space, spaces.Discrete(4), "cpu", n_envs=2)
    obs = np.zeros((2, 4, 84, 84), dtype=np.uint8)
    for step in range(3):
        nxt = np.concatenate((obs[:, 1:], np.full((2, 1, 84, 84), step + 1, dtype=np.uint8)), axis=1)
        buffer.add(obs, nxt, np.zeros(2), np.zeros(2), np.zeros(2), [{}, {}])
        obs = nxt
    assert buffer._ahead is not None
    buffer._ahead.wait()
    row = buffer.frames.strides[0]
    assert resident(buffer.frames, 0, CHUNK - row).all()
    assert np.array_equal(buffer.frames[:4, 0, 0, 0], [0, 1, 2, 3])  # what was written stays
    loaded = pickle.loads(pickle.dumps(buffer))
    assert loaded._ahead is None  # its pages are all there already
    assert np.array_equal(loaded.frames, buffer.frames)


@linux_only
def test_a_ring_whose_pages_were_all_asked_for_stops_populating() -> None:
    """Once the whole ring has been asked for, `add` drops the populator: no more work per transition."""
    space = spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8)
    buffer = CompactReplayBuffer(200, space, spaces.Discrete(4), "cpu", n_envs=1)  # ~1.5 MB: less than a chunk
    assert buffer.frames.nbytes < CHUNK
    obs = np.zeros((1, 4, 84, 84), dtype=np.uint8)
    buffer.add(obs, obs, np.zeros(1), np.zeros(1), np.zeros(1), [{}])
    assert buffer._ahead is not None and buffer._ahead.populated == buffer.frames.nbytes
    buffer._ahead.wait()
    assert resident(buffer.frames, 0, buffer.frames.nbytes).all()
    buffer.add(obs, obs, np.zeros(1), np.zeros(1), np.zeros(1), [{}])
    assert buffer._ahead is None
