"""Hyperparameter files: validation before any environment exists, safe parsing, rl_zoo3 import, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from dqn_cli import envs, hyperparams, safe_yaml
from dqn_cli.config import Hyperparams, validate
from dqn_cli.errors import ConfigError


@pytest.fixture
def no_env_creation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to build an environment."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("an environment was created before the configuration was validated")

    import gymnasium

    monkeypatch.setattr(gymnasium, "make", forbidden)
    monkeypatch.setattr(envs, "make_vec_env", forbidden)


@pytest.mark.parametrize("stem", sorted(hyperparams.shipped_files()))
def test_every_shipped_file_validates(stem: str) -> None:
    path = hyperparams.shipped_files()[stem]
    raw = safe_yaml.load_file(path)
    hp = validate(raw, str(path))
    assert hp.n_timesteps > 0
    assert path.read_text().startswith("#"), "each file carries a header saying where its values come from"
    assert "Source:" in path.read_text()


ATARI_GAMES = [
    "Pong",
    "Breakout",
    "SpaceInvaders",
    "Qbert",
    "Seaquest",
    "BeamRider",
    "Enduro",
    "Asteroids",
    "MsPacman",
    "RoadRunner",
]


@pytest.mark.parametrize("game", ATARI_GAMES)
def test_atari_files_carry_rl_zoo3_values(game: str) -> None:
    hp, selection = hyperparams.resolve(envs.resolve(game), None, [])
    assert selection.path.stem == game and selection.note is None
    assert (hp.n_timesteps, hp.buffer_size, hp.learning_rate, hp.learning_starts) == (
        10_000_000,
        100_000,
        1e-4,
        100_000,
    )
    assert (hp.target_update_interval, hp.train_freq, hp.exploration_fraction, hp.exploration_final_eps) == (
        1000,
        4,
        0.1,
        0.01,
    )
    assert (hp.frame_stack, hp.policy) == (4, "CnnPolicy")


def test_cartpole_file_carries_rl_zoo3_values() -> None:
    hp, _ = hyperparams.resolve(envs.resolve("CartPole-v1"), None, [])
    assert (hp.n_timesteps, hp.learning_rate, hp.batch_size, hp.train_freq, hp.gradient_steps) == (
        50_000,
        2.3e-3,
        64,
        256,
        128,
    )
    assert hp.policy_kwargs.net_arch == [256, 256] and hp.policy == "MlpPolicy"


def test_game_without_file_falls_back_to_atari_defaults_and_says_so(dqn) -> None:
    result = dqn("config", "--env", "Alien")
    assert result.code == 0
    assert "no hyperparameters file for Alien" in result.err and "atari.yml" in result.err
    assert "env_id: AlienNoFrameskip-v4" in result.out


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("gama: 0.9", ["unknown key 'gama'", "did you mean 'gamma'"]),
        ("gamma: 1.5", ["gamma", "less than or equal to 1", "1.5"]),
        ("buffer_size: 0", ["buffer_size", "greater than or equal to 1", "found 0"]),
        ("learning_rate: abc", ["learning_rate", "expected a number", "'abc'"]),
        ("exploration_final_eps: 2", ["exploration_final_eps", "less than or equal to 1"]),
        ("batch_size: -1", ["batch_size", "greater than or equal to 1", "-1"]),
        ("policy_kwargs: {net_archh: [64]}", ["unknown key 'policy_kwargs.net_archh'", "did you mean 'net_arch'"]),
        ("train_freq: [4, steps]", ["train_freq", "[n, step|episode]"]),
        ("gradient_steps: 0", ["gradient_steps", "-1"]),
        ("policy_kwargs: {optimizer_class: Adamax}", ["unknown optimizer 'Adamax'", "RMSprop"]),
        ("policy_kwargs: {optimizer_class: RMSprop, optimizer_kwargs: {lr: 0.1}}", ["RMSprop takes no argument 'lr'"]),
        ("n_timesteps: '1000'", ["n_timesteps", "expected a whole number"]),
    ],
)
def test_bad_values_are_rejected_with_the_field_and_what_is_allowed(
    dqn, workdir: Path, line: str, expected: list[str], no_env_creation: None
) -> None:
    path = write(workdir / "bad.yml", f"policy: CnnPolicy\n{line}\n")
    result = dqn("train", "--env", "Pong", "-c", str(path))
    assert result.code == 2
    assert str(path) in result.err
    for fragment in expected:
        assert fragment in result.err
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (workdir / "logs").exists(), "a bad config must not create a run folder"


def test_scientific_notation_is_a_float() -> None:
    assert safe_yaml.parse("lr: 1e-4\nn: 1e7\nm: !!float 2e5\n", "x") == {"lr": 1e-4, "n": 1e7, "m": 2e5}
    hp = validate(safe_yaml.parse("learning_rate: 1e-4\nn_timesteps: 1e7\n", "x"), "x")
    assert hp.learning_rate == pytest.approx(1e-4) and hp.n_timesteps == 10_000_000


def test_python_tags_are_rejected_and_never_run(dqn, workdir: Path, no_env_creation: None) -> None:
    marker = workdir / "pwned"
    path = write(workdir / "evil.yml", f"gamma: !!python/object/apply:os.system ['touch {marker}']\n")
    result = dqn("train", "--env", "Pong", "-c", str(path))
    assert result.code == 2
    assert "!!python/object/apply:os.system" in result.err and "not allowed" in result.err
    assert not marker.exists()


def test_duplicate_keys_are_rejected(dqn, workdir: Path, no_env_creation: None) -> None:
    path = write(workdir / "dup.yml", "gamma: 0.9\nbatch_size: 32\ngamma: 0.99\n")
    result = dqn("train", "--env", "Pong", "-c", str(path))
    assert result.code == 2
    assert "'gamma' appears twice" in result.err and "line 3" in result.err


def test_invalid_yaml_syntax_is_one_clear_line(dqn, workdir: Path) -> None:
    path = write(workdir / "broken.yml", "gamma: [0.9\n")
    result = dqn("config", "--env", "Pong", "-c", str(path))
    assert result.code == 2 and "not valid YAML" in result.err and str(path) in result.err


def test_missing_config_file(dqn, workdir: Path) -> None:
    result = dqn("config", "--env", "Pong", "-c", "nope.yml")
    assert result.code == 2 and "nope.yml: file not found" in result.err


# As the Hugging Face Deep RL course (unit 3) writes it for rl_zoo3.
HF_COURSE_FILE = """\
SpaceInvadersNoFrameskip-v4:
  env_wrapper:
    - stable_baselines3.common.atari_wrappers.AtariWrapper
  frame_stack: 4
  policy: 'CnnPolicy'
  n_timesteps: !!float 1e6
  buffer_size: 100000
  learning_rate: !!float 1e-4
  batch_size: 32
  learning_starts: 100000
  target_update_interval: 1000
  train_freq: 4
  gradient_steps: 1
  exploration_fraction: 0.1
  exploration_final_eps: 0.01
  # If True, you need to deactivate handle_timeout_termination
  # in the replay_buffer_kwargs
  optimize_memory_usage: False
  policy_kwargs: "dict(net_arch=[64, 64], optimizer_class=th.optim.RMSprop, optimizer_kwargs=dict(alpha=0.95, eps=0.01), activation_fn=nn.ReLU)"
"""


def test_zoo_format_file_from_the_course_is_imported(dqn, workdir: Path, no_env_creation: None) -> None:
    path = write(workdir / "dqn.yml", HF_COURSE_FILE)
    result = dqn("train", "--env", "SpaceInvaders", "-c", str(path), "--dry-run")
    assert result.code == 0, result.err
    resolved = safe_yaml.parse(result.out, "out")
    hp = Hyperparams.model_validate(resolved["hyperparams"])
    assert hp.n_timesteps == 1_000_000 and hp.learning_rate == pytest.approx(1e-4) and hp.frame_stack == 4
    assert hp.policy_kwargs.net_arch == [64, 64]
    assert hp.policy_kwargs.optimizer_class == "RMSprop"
    assert hp.policy_kwargs.optimizer_kwargs == {"alpha": 0.95, "eps": 0.01}
    assert "SpaceInvadersNoFrameskip-v4" in resolved["run"]["hyperparams_file"]


def test_zoo_linear_learning_rate_and_atari_block() -> None:
    data = {
        "atari": {
            "learning_rate": "lin_2.5e-4",
            "env_wrapper": [{"stable_baselines3.common.atari_wrappers.AtariWrapper": {"terminal_on_life_loss": False}}],
        }
    }
    from dqn_cli import zoo

    name, block = zoo.pick_section(data, "PongNoFrameskip-v4", True, "f")
    hp = validate(zoo.convert(block, "f"), "f")
    assert name == "atari" and hp.learning_rate_schedule == "linear" and hp.learning_rate == pytest.approx(2.5e-4)
    assert hp.atari_wrapper.terminal_on_life_loss is False


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('touch pwned')",
        "dict(net_arch=[64], activation_fn=__import__('os').system)",
        "dict(net_arch=open('pwned', 'w'))",
        "dict(optimizer_class=th.optim.RMSprop.__init__.__globals__)",
    ],
)
def test_zoo_policy_kwargs_code_is_refused_not_run(dqn, workdir: Path, expression: str, no_env_creation: None) -> None:
    path = write(workdir / "dqn.yml", f'PongNoFrameskip-v4:\n  policy_kwargs: "{expression}"\n')
    result = dqn("train", "--env", "Pong", "-c", str(path))
    assert result.code == 2
    assert "not allowed" in result.err and "policy_kwargs" in result.err
    assert not (workdir / "pwned").exists()


def test_zoo_file_without_the_env_block(dqn, workdir: Path) -> None:
    path = write(workdir / "dqn.yml", "CartPole-v1:\n  n_timesteps: 1000\n")
    result = dqn("config", "--env", "Pong", "-c", str(path))
    assert result.code == 2 and "without a block for PongNoFrameskip-v4" in result.err


def test_set_overrides_are_parsed_and_validated_like_the_file(dqn) -> None:
    result = dqn(
        "config", "--env", "Pong", "--set", "learning_rate=2.5e-4", "--set", "policy_kwargs.net_arch=[128, 64]",
        "--set", "atari_wrapper.terminal_on_life_loss=false", "-n", "5000", "--seed", "7",
    )  # fmt: skip
    assert result.code == 0, result.err
    resolved = safe_yaml.parse(result.out, "out")
    hp = resolved["hyperparams"]
    assert hp["learning_rate"] == pytest.approx(2.5e-4) and hp["policy_kwargs"]["net_arch"] == [128, 64]
    assert hp["atari_wrapper"]["terminal_on_life_loss"] is False and hp["n_timesteps"] == 5000
    assert resolved["run"]["seed"] == 7

    bad = dqn("config", "--env", "Pong", "--set", "gamma=2")
    assert bad.code == 2 and "gamma" in bad.err and "--set" in bad.err
    malformed = dqn("config", "--env", "Pong", "--set", "gamma")
    assert malformed.code == 2 and "expected key=value" in malformed.err


def test_resolved_config_is_accepted_back_by_train(dqn, workdir: Path) -> None:
    first = dqn("config", "--env", "CartPole-v1", "--set", "gamma=0.95", "--seed", "3")
    path = write(workdir / "resolved.yml", first.out)
    again = dqn("config", "--env", "CartPole-v1", "-c", str(path), "--seed", "3")
    assert again.code == 0, again.err
    assert safe_yaml.parse(again.out, "a")["hyperparams"] == safe_yaml.parse(first.out, "b")["hyperparams"]


def test_v5_ids_do_not_skip_frames_twice() -> None:
    info = envs.resolve("ALE/Breakout-v5")
    hp, _ = hyperparams.resolve(info, None, [])
    assert envs.wrapper_frame_skip(info, hp) == 1
    assert envs.wrapper_frame_skip(envs.resolve("Breakout"), hp) == 4
    hp4, _ = hyperparams.resolve(info, None, ["atari_wrapper.frame_skip=4"])
    with pytest.raises(Exception, match="already skips frames"):
        envs.wrapper_frame_skip(info, hp4)


def test_keys_listing_documents_every_key(dqn) -> None:
    result = dqn("config", "--keys")
    assert result.code == 0
    for key in ("learning_rate", "policy_kwargs.optimizer_kwargs", "atari_wrapper.noop_max", "exploration_final_eps"):
        assert key in result.out


def test_validation_error_type() -> None:
    with pytest.raises(ConfigError):
        validate(["not", "a", "mapping"], "x")
