"""The hyperparameter schema: one frozen, validated object per run, keyed by SB3 `DQN` argument names.

Each field is documented once, here: meaning, unit, and where its default comes from. Defaults not stated
otherwise are `stable_baselines3.DQN`'s own; the shipped per-game files in `hyperparams/` override them with
rl_zoo3's published values.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from dqn_cli.errors import ConfigError


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, found {value!r}")
    return value


def _integer(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # `1e7` and `!!float 1e7` are whole numbers written in float notation
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, found {value!r}")
    return value


def _boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, found {value!r}")
    return value


Number = Annotated[float, BeforeValidator(_number)]
Integer = Annotated[int, BeforeValidator(_integer)]
Boolean = Annotated[bool, BeforeValidator(_boolean)]
Probability = Annotated[float, BeforeValidator(_number), Field(ge=0.0, le=1.0)]

# Names a file may use for the classes SB3 takes in `policy_kwargs` (matched case-insensitively).
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "sgd": "SGD"}
OPTIMIZER_KWARGS = {
    "Adam": {"betas", "eps", "weight_decay", "amsgrad", "foreach", "fused"},
    "AdamW": {"betas", "eps", "weight_decay", "amsgrad", "foreach", "fused"},
    "RMSprop": {"alpha", "eps", "weight_decay", "momentum", "centered", "foreach"},
    "SGD": {"momentum", "dampening", "weight_decay", "nesterov", "foreach"},
}
ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "elu": "ELU", "leakyrelu": "LeakyReLU", "gelu": "GELU", "silu": "SiLU"}


def _canonical(table: dict[str, str], what: str) -> Any:
    def check(value: Any) -> str:
        key = str(value).rsplit(".", 1)[-1].replace("_", "").lower()
        if key not in table:
            raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(sorted(table.values()))}")
        return table[key]

    return check


class Section(BaseModel):
    """A block of settings: unknown keys are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AtariWrapperSettings(Section):
    """Arguments of `stable_baselines3.common.atari_wrappers.AtariWrapper` (the DeepMind preprocessing)."""

    noop_max: Integer = Field(30, ge=0, description="at most this many random no-ops at reset (Mnih et al. 2015)")
    frame_skip: Integer | None = Field(
        None,
        ge=1,
        description="emulator frames per agent step, max-pooled over the last two; default 4 on *NoFrameskip ids, "
        "1 on ids that skip frames themselves (ALE/*-v5 skips 4)",
    )
    screen_size: Integer = Field(84, ge=8, description="observation side in pixels (grayscale, square)")
    terminal_on_life_loss: Boolean = Field(True, description="training episodes end on a life loss (eval: never)")
    clip_reward: Boolean = Field(True, description="training rewards clipped to their sign (eval: never)")
    action_repeat_probability: Probability = Field(
        0.0, description="sticky actions added by the wrapper; leave 0 on ALE/*-v5, which has its own (0.25)"
    )


class FeaturesExtractorKwargs(Section):
    """Arguments of the features extractor (SB3's `NatureCNN` for image observations)."""

    features_dim: Integer = Field(512, ge=1, description="width of the CNN's last layer (Nature DQN: 512)")


class PolicyKwargs(Section):
    """SB3's `policy_kwargs`, written as data: class names are strings from an allow-list, never code."""

    net_arch: list[Annotated[int, BeforeValidator(_integer), Field(ge=1)]] | None = Field(
        None, description="hidden layers of the Q head; SB3's default: [] after the Nature CNN, [64, 64] for MLPs"
    )
    activation_fn: Annotated[str, BeforeValidator(_canonical(ACTIVATIONS, "activation"))] = Field(
        "ReLU", description=f"torch.nn activation: {', '.join(ACTIVATIONS.values())}"
    )
    normalize_images: Boolean = Field(True, description="divide pixels by 255 inside the network")
    features_extractor_kwargs: FeaturesExtractorKwargs | None = None
    optimizer_class: Annotated[str, BeforeValidator(_canonical(OPTIMIZERS, "optimizer"))] = Field(
        "Adam", description=f"torch.optim optimizer: {', '.join(OPTIMIZERS.values())}"
    )
    optimizer_kwargs: dict[str, float | bool | list[float]] = Field(
        default_factory=dict,
        description="optimizer arguments other than lr, e.g. RMSprop {alpha: 0.95, eps: 0.01, centered: true}",
    )

    @field_validator("optimizer_kwargs")
    @classmethod
    def _known_optimizer_kwargs(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        optimizer = info.data.get("optimizer_class", "Adam")
        allowed = OPTIMIZER_KWARGS.get(optimizer, set())
        for key in value:
            if key not in allowed:
                hint = "; the learning rate is set by learning_rate" if key == "lr" else ""
                raise ValueError(f"{optimizer} takes no argument {key!r}; allowed: {', '.join(sorted(allowed))}{hint}")
        return value


def _train_freq(value: Any) -> Any:
    if isinstance(value, list | tuple) and len(value) == 2 and value[1] in ("step", "episode"):
        count, unit = _integer(value[0]), value[1]
    else:
        count, unit = _integer(value) if not isinstance(value, list | tuple) else None, "step"
    if count is None or count < 1:
        raise ValueError(f"expected a whole number ≥ 1 or [n, step|episode], found {value!r}")
    return count if unit == "step" and not isinstance(value, list | tuple) else (count, unit)


TrainFreq = Annotated[int | tuple[int, Literal["step", "episode"]], BeforeValidator(_train_freq)]


class Hyperparams(Section):
    """Everything that defines a DQN experiment. Names are `stable_baselines3.DQN`'s, plus dqn's own few."""

    # --- dqn's own keys -------------------------------------------------------------------------------
    n_timesteps: Integer = Field(1_000_000, ge=1, description="training budget in env steps (agent steps)")
    policy: Literal["CnnPolicy", "MlpPolicy"] | None = Field(
        None, description="CnnPolicy (Nature CNN) for Atari, MlpPolicy otherwise; chosen from the env when unset"
    )
    n_envs: Integer = Field(1, ge=1, description="environments stepped together; each vector step is n_envs steps")
    frame_stack: Integer = Field(1, ge=1, description="consecutive observations stacked (Atari: 4)")
    atari_wrapper: AtariWrapperSettings = AtariWrapperSettings()
    env_kwargs: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="keyword arguments for gymnasium.make, e.g. {repeat_action_probability: 0}"
    )
    replay_buffer_class: Literal["auto", "ReplayBuffer", "CompactReplayBuffer"] = Field(
        "auto",
        description="auto: CompactReplayBuffer (each frame stored once, ~7 KB per Atari transition) for stacked "
        "images, SB3's ReplayBuffer otherwise",
    )
    double_q: Boolean = Field(
        False,
        description="Double DQN (van Hasselt et al. 2016): the online network picks the next action, the "
        "target network values it",
    )
    dueling: Boolean = Field(False, description="dueling value/advantage streams over the features (Wang et al. 2016)")
    prioritized_replay: Boolean = Field(False, description="proportional prioritized replay (Schaul et al. 2016)")
    prioritized_replay_alpha: Probability = Field(0.6, description="priority exponent α (0: uniform sampling)")
    prioritized_replay_beta: Probability = Field(0.4, description="initial importance-weight exponent β, annealed to 1")
    prioritized_replay_eps: Number = Field(1e-6, gt=0, description="added to |TD error| so no priority is 0")
    learning_rate_schedule: Literal["constant", "linear"] = Field(
        "constant", description="linear: decays learning_rate to 0 over the run (rl_zoo3's `lin_` prefix)"
    )
    # --- stable_baselines3.DQN arguments --------------------------------------------------------------
    learning_rate: Number = Field(1e-4, gt=0, description="optimizer step size")
    buffer_size: Integer = Field(1_000_000, ge=1, description="replay buffer capacity in transitions")
    learning_starts: Integer = Field(100, ge=0, description="env steps collected before the first gradient step")
    batch_size: Integer = Field(32, ge=1, description="transitions sampled per gradient step")
    tau: Number = Field(1.0, gt=0.0, le=1.0, description="target update coefficient; 1 = hard copy (Nature DQN)")
    gamma: Probability = Field(0.99, description="discount factor per env step")
    train_freq: TrainFreq = Field(4, description="env steps (or [n, episode]) between training phases")
    gradient_steps: Integer = Field(1, description="gradient steps per training phase; -1 = as many as env steps")
    optimize_memory_usage: Boolean = Field(False, description="SB3's buffer variant that stores next_obs implicitly")
    n_steps: Integer = Field(1, ge=1, description="n-step returns (1 = classic one-step TD target)")
    target_update_interval: Integer = Field(10_000, ge=1, description="env steps between target-network updates")
    exploration_fraction: Probability = Field(0.1, description="share of n_timesteps over which epsilon anneals")
    exploration_initial_eps: Probability = Field(1.0, description="epsilon at the start of training")
    exploration_final_eps: Probability = Field(0.05, description="epsilon after the annealing")
    max_grad_norm: Number = Field(10.0, gt=0, description="gradient-norm clipping threshold")
    stats_window_size: Integer = Field(100, ge=1, description="episodes averaged in the rollout statistics")
    policy_kwargs: PolicyKwargs = PolicyKwargs()

    @model_validator(mode="after")
    def _replay_ratio_kept(self) -> Hyperparams:
        freq, n = self.train_freq, self.n_envs
        if isinstance(freq, int) and n > 1 and freq % n and n % freq:
            fitting = ", ".join(str(d) for d in range(2, 2 * freq + 1) if freq % d == 0 or d % freq == 0)
            raise ValueError(
                f"n_envs={n} with train_freq={freq}: one must divide the other to keep one training phase per "
                f"train_freq env steps; use n_envs {fitting}"
            )
        if isinstance(freq, int) and n > freq and self.gradient_steps != -1 and (self.gradient_steps * n) % freq:
            raise ValueError(
                f"gradient_steps={self.gradient_steps} × n_envs={n} must be a multiple of train_freq={freq}"
            )
        return self

    @model_validator(mode="after")
    def _prioritized_n_step(self) -> Hyperparams:
        if self.prioritized_replay and self.n_steps > 1 and self.replay_buffer_class == "ReplayBuffer":
            raise ValueError(
                "prioritized_replay with n_steps > 1 needs replay_buffer_class CompactReplayBuffer or auto"
            )
        return self

    @field_validator("gradient_steps")
    @classmethod
    def _gradient_steps(cls, value: int) -> int:
        if value < 1 and value != -1:
            raise ValueError(f"expected a whole number ≥ 1, or -1 (as many as env steps), found {value}")
        return value


def _nested_section(annotation: Any) -> type[Section] | None:
    """The `Section` a field holds (directly or as `Section | None`), if any."""
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, Section)), None)


def section_fields(loc: tuple[int | str, ...]) -> list[str]:
    model: type[Section] | None = Hyperparams
    for part in loc:
        field = model.model_fields.get(part) if model is not None and isinstance(part, str) else None
        model = _nested_section(getattr(field, "annotation", None))
        if model is None:
            return []
    return list(model.model_fields) if model is not None else []


def closest_key(key: str, loc: tuple[int | str, ...] = ()) -> str | None:
    """The valid key nearest to a misspelt one, within the section `loc` points into."""
    matches = difflib.get_close_matches(key, section_fields(loc), n=1, cutoff=0.5)
    return matches[0] if matches else None


def _explain(error: Any) -> str:
    loc = tuple(error["loc"])
    where = ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        suggestion = closest_key(str(loc[-1]), loc[:-1])
        hint = f"did you mean '{suggestion}'?" if suggestion else "remove it"
        return f"unknown key '{where}'; {hint} (`dqn config --keys` lists the valid keys)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if message.startswith("Input should be "):
        message = f"must be {message.removeprefix('Input should be ')}, found {error['input']!r}"
    return f"{where}: {message}" if where else message


def validate(raw: Any, source: str) -> Hyperparams:
    """Validate a mapping of hyperparameters; all problems in one `ConfigError` that names the source."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of hyperparameter names to values, found {type(raw).__name__}")
    try:
        return Hyperparams.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(dict.fromkeys(_explain(e) for e in exc.errors()))
        raise ConfigError(f"{source}: {problems}") from None


def keys_help() -> list[tuple[str, str, str]]:
    """(key, default, description) for every key a hyperparameters file may hold, nested keys dotted."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            nested = _nested_section(field.annotation)
            if nested is not None:
                walk(nested, f"{prefix}{name}.")
                continue
            default = field.get_default(call_default_factory=True)
            rows.append((f"{prefix}{name}", repr(default) if default is not None else "auto", field.description or ""))

    walk(Hyperparams, "")
    return rows


DEVICE = r"^(auto|cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$"


def check_device(device: str) -> str:
    """A torch device name, checked without importing torch."""
    import re

    if not re.match(DEVICE, device):
        raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda, cuda:N, mps or xpu")
    return device


class RunSettings(Section):
    """How one training run is carried out, beyond the algorithm's hyperparameters. Saved with the run."""

    env_id: str
    seed: Integer = Field(ge=0, description="seeds SB3, torch, numpy and the envs (random when not given)")
    device: str = Field(
        "auto",
        pattern=DEVICE,
        description="torch device: auto, cpu, cuda, cuda:1, mps",
    )
    eval_freq: Integer = Field(25_000, ge=0, description="env steps between evaluations (0: never)")
    eval_episodes: Integer = Field(5, ge=1, description="full games played per evaluation")
    eval_epsilon: Probability = Field(0.01, description="ε of the ε-greedy evaluation policy")
    eval_envs: Integer = Field(
        0,
        ge=0,
        description="games played side by side in each evaluation, one batched forward pass per step "
        "(0: min(eval_episodes, 8))",
    )
    vec_env: Literal["ale", "sb3"] = Field(
        "ale",
        description="Atari envs: ale (ALE's native emulator threads, same observations) or sb3 (SB3's wrappers)",
    )
    save_freq: Integer = Field(100_000, ge=0, description="env steps between checkpoints (0: only on stop)")
    keep_checkpoints: Integer = Field(2, ge=1, description="newest checkpoints kept")
    save_replay_buffer: Boolean = Field(False, description="periodic checkpoints include the replay buffer")
    tensorboard: Boolean = Field(True, description="write TensorBoard logs under the run's tensorboard/")
    hyperparams_file: str = Field(description="where the hyperparameters were read from")


class ResolvedConfig(Section):
    """Everything a run was started with: `resolved_config.yml` in the run folder, and `dqn config`'s output."""

    dqn_version: str
    run: RunSettings
    hyperparams: Hyperparams
