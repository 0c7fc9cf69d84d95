"""dqn's compiled Atari step (`native/ale_step.cpp`): built once per ale-py install, checked, loaded with ctypes.

ale-py exports ALE's C++ classes from its extension module, so a few hundred lines of C++ compiled against it can
play a game's frame skip and turn the last two raw palette screens into SB3's 84x84 observation on worker threads:
no RGB screens, no Python between the frames, the main thread free for the learner. The library is built with the
machine's C++ compiler (`$CXX`, else `c++`/`g++`) into dqn's cache folder the first time an Atari env is made, keyed
by the source and the ale-py module it links, then checked in a child process against ale-py + OpenCV (so an ale-py
whose C++ classes differ fails the check instead of the run). Where there is no compiler or the check fails, Atari
games run on ALE's vector env as before (`native_status()` says why); `DQN_NATIVE=0` turns the library off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("native") / "ale_step.cpp"
ABI_VERSION = 3
# -march=native: built for this machine's CPU (its flags are in the build key); -ffp-contract=off: no FMA, so the
# area resize rounds as OpenCV's does; -fno-math-errno: lrintf inlined.
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno", "-pthread"]
INFO_SIZE = 6

_int_p = ctypes.POINTER(ctypes.c_int)
_uint8_p = ctypes.POINTER(ctypes.c_uint8)
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "dqn_abi_version": (ctypes.c_int, []),
    "dqn_pool_new": (ctypes.c_void_p, [ctypes.c_int]),
    "dqn_pool_thread_ids": (ctypes.c_int, [ctypes.c_void_p, _int_p, ctypes.c_int]),
    "dqn_pool_free": (None, [ctypes.c_void_p]),
    "dqn_game_new": (
        ctypes.c_void_p,
        [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_float, *[ctypes.c_int] * 4],
    ),
    "dqn_game_error": (ctypes.c_char_p, [ctypes.c_void_p]),
    "dqn_game_free": (None, [ctypes.c_void_p]),
    "dqn_game_actions": (ctypes.c_int, [ctypes.c_void_p, _int_p, ctypes.c_int]),
    "dqn_game_palette": (ctypes.c_int, [ctypes.c_void_p, _uint8_p]),
    "dqn_game_set_table": (None, [ctypes.c_void_p, _uint8_p]),
    "dqn_game_screen": (None, [ctypes.c_void_p, _uint8_p]),
    "dqn_game_seed": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "dqn_game_reset": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, _uint8_p, _int_p]),
    "dqn_game_send": (None, [ctypes.c_void_p, ctypes.c_int]),
    "dqn_game_recv": (ctypes.c_int, [ctypes.c_void_p, _uint8_p, _int_p]),
    "dqn_games_recv_stacked": (
        ctypes.c_int,
        [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_int,
            _uint8_p,
            ctypes.POINTER(ctypes.c_longlong),
            ctypes.c_int,
            _int_p,
        ],
    ),
    "dqn_games_step_team": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), _int_p, ctypes.c_int],
    ),
}


class NativeError(RuntimeError):
    """The compiled step failed (ALE raised inside it)."""


@dataclass(frozen=True)
class Status:
    """Whether the compiled step is in use, and why not."""

    library: ctypes.CDLL | None
    reason: str


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("DQN_NATIVE_CACHE", str(Path(root) / "dqn-cli")))


def ale_module() -> Path:
    import ale_py._ale_py as module

    return Path(str(module.__file__)).resolve()


@functools.cache
def _first_cpu() -> dict[str, str]:
    """/proc/cpuinfo's first entry as {field: value}; empty where there is none (not Linux)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_field(name: str) -> str:
    """The value of `name` (vendor_id, flags, model name) for this machine's first CPU; empty where there is none.
    The flags key the compiled step's build (a library built with -march=native on one CPU may not run on another)
    and decide MKL's kernels (`dqn_cli.mkl`)."""
    return _first_cpu().get(name, "")


def build_key(module: Path) -> str:
    stat = module.stat()
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(f"{module}|{stat.st_size}|{stat.st_mtime_ns}|{ABI_VERSION}|{' '.join(FLAGS)}".encode())
    digest.update(cpu_field("flags").encode())
    return digest.hexdigest()[:16]


def compiler() -> str | None:
    """The C++ compiler: `$CXX` where set (NativeError if it is not on PATH: the one the user chose, or none), else
    the first of c++, g++ and clang++ found; None where there is none."""
    chosen = os.environ.get("CXX", "").strip()
    if chosen:
        try:
            found = shutil.which(shlex.split(chosen)[0])
        except ValueError as error:  # unbalanced quotes
            raise NativeError(f"CXX={chosen!r} cannot be read as a command ({error}): fix or unset it") from error
        if found is None:
            raise NativeError(f"CXX={chosen!r} is not on PATH: install it, or unset CXX to use c++, g++ or clang++")
        return chosen
    return next((name for name in ("c++", "g++", "clang++") if shutil.which(name)), None)


def build(target: Path, module: Path) -> None:
    """Compile the step into `target` (atomically: a half-written library is never loaded)."""
    link = [f"-L{module.parent}", f"-l:{module.name}", f"-Wl,-rpath,{module.parent}"]
    compile_library(SOURCE, target, FLAGS, link)


def compile_library(source: Path, target: Path, flags: list[str], link: list[str] | None = None) -> None:
    """Compile the C++ `source` into the shared library `target` with `flags`, then `link` (libraries after the
    source, as the linker needs them), atomically."""
    cxx = compiler()
    if cxx is None:
        raise NativeError("no C++ compiler found (install g++, or set CXX)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        command = [*shlex.split(cxx), *flags, str(source), "-o", str(out), *(link or [])]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise NativeError(f"{cxx} failed: {last}")
        os.replace(out, target)


def _load(path: Path) -> ctypes.CDLL:
    import ale_py  # noqa: F401  (ALE's module first: the library links against it)

    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    if lib.dqn_abi_version() != ABI_VERSION:
        raise NativeError(f"{path} is not this version's build")
    return lib


def _checked(path: Path, checker: str = "dqn_cli.native") -> str | None:
    """Run the built library's check (`python -m CHECKER LIBRARY`: `self_check` here) in a child process, once per
    build (a crash there costs nothing; the verdict is kept beside the library); None if it passed."""
    marker = path.with_suffix(".json")
    try:
        return json.loads(marker.read_text())["failure"]
    except (OSError, ValueError, KeyError):
        pass  # not checked yet (or a marker from elsewhere that cannot be read): check now
    done = subprocess.run(
        [sys.executable, "-m", checker, str(path)], capture_output=True, text=True, check=False, timeout=300
    )
    failure = None if done.returncode == 0 else (done.stdout + done.stderr).strip().splitlines()[-1:] or ["crashed"]
    reason = None if failure is None else f"the self-check failed ({failure[0]})"
    with tempfile.NamedTemporaryFile("w", dir=marker.parent, suffix=".tmp", delete=False) as tmp:
        json.dump({"failure": reason}, tmp)  # a file of its own: processes checking at once never mix their writes
    os.replace(tmp.name, marker)
    return reason


SWITCH = {"1": True, "true": True, "yes": True, "on": True, "": True, "0": False, "false": False, "no": False}
SWITCH["off"] = False


@functools.cache
def native_status() -> Status:
    value = os.environ.get("DQN_NATIVE", "1")
    if value.strip().lower() not in SWITCH:
        return Status(None, f"DQN_NATIVE={value!r} is not 0 or 1: unset it to use the compiled step, 0 to turn it off")
    if not SWITCH[value.strip().lower()]:
        return Status(None, f"turned off by DQN_NATIVE={value}")
    if not sys.platform.startswith("linux"):
        return Status(None, "built on Linux only")
    try:
        module = ale_module()
        path = cache_dir() / f"ale_step-{build_key(module)}.so"
        if not path.exists():
            build(path, module)
        failure = _checked(path)
        if failure is not None:
            return Status(None, failure)
        return Status(_load(path), f"compiled step {path}")
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        return Status(
            None,
            f"cannot build or load it: {where}{error.strerror or error} (set DQN_NATIVE_CACHE to a writable folder)",
        )
    except (NativeError, subprocess.SubprocessError) as error:
        return Status(None, str(error))


def library() -> ctypes.CDLL | None:
    return native_status().library


def rom_path(game: str) -> Path:
    from ale_py import roms

    path = roms.get_rom_path(game)
    if path is None:
        raise NativeError(f"ale-py has no ROM named {game!r}")
    return Path(path)


def _ptr(array: np.ndarray) -> ctypes._Pointer:
    return array.ctypes.data_as(_uint8_p)


@functools.cache
def gray_of_max(palette: bytes) -> np.ndarray:
    """256x256 table: OpenCV's grayscale of the channel-wise max of two palette colours (SB3's max-pool, then
    WarpFrame's cvtColor), computed by OpenCV itself, so it is exact by construction."""
    import cv2

    rgb = np.frombuffer(palette, dtype=np.uint8).reshape(256, 3)
    pairs = np.maximum(rgb[:, None, :], rgb[None, :, :])
    return np.ascontiguousarray(cv2.cvtColor(pairs, cv2.COLOR_RGB2GRAY))


class Pool:
    """The worker threads that play the games' steps (one per core, at most one per game)."""

    def __init__(self, lib: ctypes.CDLL, threads: int) -> None:
        self.lib = lib
        self.handle = lib.dqn_pool_new(threads)
        ids = (ctypes.c_int * threads)()
        n = lib.dqn_pool_thread_ids(self.handle, ids, threads)
        self.thread_ids = [int(ids[i]) for i in range(n)]

    def close(self) -> None:
        if self.handle:
            self.lib.dqn_pool_free(self.handle)
            self.handle = None


def step_on_team(pool: Pool, games: Sequence[NativeGame], actions: np.ndarray) -> bool:
    """Play these games' steps (one action each) now, on the calling thread's OpenMP team (torch's threads), and
    return True; or do nothing and return False where torch has no libgomp team here at least as large as the pool.

    After a forward pass or a gradient step torch's OpenMP workers spin for their next parallel region
    (`threads.configure_openmp`); the pool's threads, woken beside them, got the cores only when the spin ended.
    Played as a parallel region of that team instead, the steps run on the caller and the spinning workers, so the
    cores hold only the threads at work: 8 evaluation games here played 1,462-1,534 agent steps/s against
    1,215-1,391 on the pool in alternating processes (1.94-1.96 cores busy against 1.80-1.84; the same episodes).
    `recv` then returns each game's step at once."""
    handles = (ctypes.c_void_p * len(games))(*(game.handle for game in games))
    chosen = np.ascontiguousarray(actions, dtype=np.intc)
    return bool(pool.lib.dqn_games_step_team(pool.handle, handles, chosen.ctypes.data_as(_int_p), len(games)))


def recv_stacked(games: Sequence[NativeGame], stacks: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Receive these games' steps at once, each into its frame stack: `stacks[rows[i]]` (oldest frame first) moves
    up by one frame and takes game i's new frame last, as VecFrameStack updates it. Returns each game's (reward, game
    over, truncated, lives, frame, episode frame), one row per game; NativeError where a step failed.

    One call instead of a `recv` per game: an 8-game vector step's receipt took 0.3-0.4 ms of Python, during which
    torch's OpenMP worker spins beside it (`step_on_team`)."""
    n, depth = len(games), stacks.shape[1] if stacks.ndim > 1 else 0
    shape_ok = stacks.ndim == 4 and depth >= 1 and all(g.size**2 == stacks[0, 0].size for g in games)
    if stacks.dtype != np.uint8 or not stacks.flags.c_contiguous or not shape_ok:
        raise ValueError(
            f"frame stacks must be C-contiguous uint8 (N, K, size, size), got {stacks.dtype} {stacks.shape}"
        )
    chosen = np.ascontiguousarray(rows, dtype=np.longlong)
    if chosen.shape != (n,) or (n and not 0 <= chosen.min() <= chosen.max() < len(stacks)):
        raise ValueError(f"rows {chosen} do not pick one of the {len(stacks)} stacks for each of the {n} games")
    info = np.empty((n, INFO_SIZE), dtype=np.intc)
    if not n:
        return info
    handles = (ctypes.c_void_p * n)(*(game.handle for game in games))
    rows_p = chosen.ctypes.data_as(ctypes.POINTER(ctypes.c_longlong))
    code = games[0].lib.dqn_games_recv_stacked(handles, n, _ptr(stacks), rows_p, depth, info.ctypes.data_as(_int_p))
    if code < 0:
        games[-1 - code]._raise_if(code)
    return info


class NativeGame:
    """One game's emulator in the compiled step: `send` starts a frame-skipped step on the pool, `recv` waits."""

    def __init__(
        self,
        pool: Pool,
        rom: Path,
        *,
        seed: int,
        sticky: float,
        full_action_space: bool,
        frame_skip: int,
        size: int,
        max_frames: int | None,
    ) -> None:
        self.lib, self.size = pool.lib, size
        args = (seed, sticky, int(full_action_space), frame_skip, size, max_frames or 0)
        self.handle = self.lib.dqn_game_new(pool.handle, str(rom).encode(), *args)
        error = self.lib.dqn_game_error(self.handle)
        if error:  # ALE refused the ROM or its settings: free what was made, then say why
            self.close()
            raise NativeError(error.decode(errors="replace"))
        actions = (ctypes.c_int * 64)()
        self.action_set = list(actions[: self.lib.dqn_game_actions(self.handle, actions, 64)])
        palette = np.zeros(256 * 3, dtype=np.uint8)
        self._raise_if(self.lib.dqn_game_palette(self.handle, _ptr(palette)))
        self.lib.dqn_game_set_table(self.handle, _ptr(gray_of_max(palette.tobytes())))
        self.info = np.zeros(INFO_SIZE, dtype=np.intc)
        self._info_p = self.info.ctypes.data_as(_int_p)

    def _raise_if(self, code: int) -> None:
        if code != 0:
            raise NativeError(self.lib.dqn_game_error(self.handle).decode(errors="replace"))

    def seed(self, seed: int) -> None:
        """ALE's random_seed, then the ROM reloaded (AtariEnv.seed_game + load_game)."""
        self._raise_if(self.lib.dqn_game_seed(self.handle, seed))

    def reset(self, noops: int) -> tuple[np.ndarray, np.ndarray]:
        """A new game after `noops` single-frame no-ops: its warped frame and (lives, frame, episode frame)."""
        frame = np.empty((self.size, self.size), dtype=np.uint8)
        self._raise_if(self.lib.dqn_game_reset(self.handle, noops, _ptr(frame), self._info_p))
        return frame, self.info[:3].copy()

    def send(self, action: int) -> None:
        self.lib.dqn_game_send(self.handle, action)

    def recv(self) -> tuple[np.ndarray, np.ndarray]:
        """The step's warped frame and (reward, game over, truncated, lives, frame, episode frame)."""
        frame = np.empty((self.size, self.size), dtype=np.uint8)
        self._raise_if(self.lib.dqn_game_recv(self.handle, _ptr(frame), self._info_p))
        return frame, self.info.copy()

    def screen(self) -> np.ndarray:
        out = np.empty(210 * 160, dtype=np.uint8)
        self.lib.dqn_game_screen(self.handle, _ptr(out))
        return out.reshape(210, 160)

    def close(self) -> None:
        if self.handle:
            self.lib.dqn_game_free(self.handle)
            self.handle = None


def self_check(lib: ctypes.CDLL, game: str = "breakout", steps: int = 400) -> None:
    """Play `game` with random actions through the compiled step and through ale-py (4 frames a step, SB3's max-pool
    of the last two RGB screens, OpenCV's grayscale and area resize), new games included; raise AssertionError at
    the first difference in the raw screen, the observation, the reward, the game over or the lives."""
    import ale_py

    from dqn_cli.ale_vec import warp_frame  # SB3's WarpFrame as the fallback path runs it (imported here: no cycle)

    rom = rom_path(game)
    reference = ale_py.ALEInterface()
    reference.setLoggerMode(ale_py.LoggerMode.Error)
    reference.setFloat("repeat_action_probability", 0.0)
    reference.setInt("random_seed", 123)
    reference.loadROM(rom)
    actions = reference.getMinimalActionSet()
    pool = Pool(lib, 2)
    native = NativeGame(
        pool, rom, seed=123, sticky=0.0, full_action_space=False, frame_skip=4, size=84, max_frames=None
    )

    rng = np.random.default_rng(0)
    try:
        assert native.action_set == [int(a.value) for a in actions], (native.action_set, actions)
        pooled = np.zeros((2, 210, 160, 3), dtype=np.uint8)
        game_over = True
        for t in range(steps):
            if game_over:
                noops = int(rng.integers(1, 31))
                reference.reset_game()
                for _ in range(noops):
                    reference.act(actions[0])
                frame, info = native.reset(noops)
                assert np.array_equal(frame, warp_frame(reference.getScreenRGB(), 84)), (
                    f"reset before step {t}: observations differ"
                )
            action = int(rng.integers(len(actions)))
            reward, game_over = 0, False
            for i in range(4):
                reward += reference.act(actions[action])
                if i >= 2:
                    pooled[i - 2] = reference.getScreenRGB()
                game_over = reference.game_over(with_truncation=False)
                if game_over:
                    break
            native.send(action)
            frame, info = native.recv()
            assert np.array_equal(native.screen(), reference.getScreen()), f"step {t}: raw screens differ"
            assert np.array_equal(frame, warp_frame(pooled.max(axis=0), 84)), f"step {t}: observations differ"
            assert (info[0], bool(info[1]), info[3]) == (reward, game_over, reference.lives()), f"step {t}: {info}"
    finally:
        native.close()
        pool.close()


if __name__ == "__main__":  # `python -m dqn_cli.native LIBRARY`: the check `native_status` runs in a child process
    self_check(_load(Path(sys.argv[1])))
