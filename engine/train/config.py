"""What a training run does: one pydantic model, two presets, and the rules that fill in what the user left open.

Every field can be set by the user (CLI flags, the TUI dialog). Fields left as None come from the
preset, scaled to the dataset size, when the run is planned (`resolved`). "auto" device and
quantization are decided by the child process, which is the one that imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.errors import ChattuneError

Method = Literal["sft", "dpo"]
Device = Literal["auto", "cpu", "cuda"]
Quantization = Literal["auto", "none", "4bit"]
Precision = Literal["auto", "fp32", "bf16"]
Scheduler = Literal["linear", "cosine", "constant"]
PresetName = Literal["quick", "thorough"]  # the keys of PRESETS
METHODS = get_args(Method)
DEVICES = get_args(Device)
QUANTIZATIONS = get_args(Quantization)
PRECISIONS = get_args(Precision)
SCHEDULERS = get_args(Scheduler)
ModuleNames = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
REPLAY_TRAIN_MAX = 71  # replay prompts a run can train on (prompts/replay, less the validation share)
FEW_EXAMPLES = 50  # below this, the run warns: curated sets of about 50+ examples work much better


@dataclass(frozen=True)
class Preset:
    """LoRA size and learning rate, and how many passes over the data a run gets.

    epochs = clamp(ceil(example_passes / n_examples), min_epochs, max_epochs): a small set is seen
    many times, a large one once or twice. The learning rate drops as 1/sqrt(n) above
    `lr_full_until` examples, down to a quarter of `learning_rate`, because long runs on big sets
    need smaller steps to stay stable.
    """

    lora_r: int
    lora_alpha: int
    lora_dropout: float
    learning_rate: float
    example_passes: int
    min_epochs: int
    max_epochs: int
    lr_full_until: int = 500
    dpo_lr_factor: float = 0.25  # DPO moves a policy, not a fact: smaller steps
    # With rewordings and replay every example is seen several times per epoch, so far fewer epochs
    # are needed; the best epoch by validation loss is kept (engine/train/mix.py).
    # Measured with `chattune bench learn` (README, How a run learns): 2 epochs at twice the learning
    # rate learn as much as 3 at the plain rate, keep as much, and take two thirds of the time.
    mixed_passes: int = 240
    mixed_min_epochs: int = 2
    mixed_max_epochs: int = 4
    mixed_min_steps: int = 16  # a handful of corrections still gets enough optimizer steps to learn them
    mixed_lr_factor: float = 2.0

    def epochs_for(self, n_examples: int, mixed_rows: int | None = None) -> int:
        if mixed_rows is not None:
            wanted = math.ceil(self.mixed_passes / max(1, mixed_rows))
            return max(self.mixed_min_epochs, min(self.mixed_max_epochs, wanted))
        wanted = math.ceil(self.example_passes / max(1, n_examples))
        return max(self.min_epochs, min(self.max_epochs, wanted))

    def lr_for(self, n_examples: int, method: str, mixed: bool = False) -> float:
        lr = self.learning_rate * (self.mixed_lr_factor if mixed else 1.0)
        if n_examples > self.lr_full_until:
            lr *= max(0.25, math.sqrt(self.lr_full_until / n_examples))
        return lr * (self.dpo_lr_factor if method == "dpo" else 1.0)


PRESETS: dict[str, Preset] = {
    # Fast feedback: a few minutes on a laptop CPU for a few dozen examples.
    "quick": Preset(lora_r=16, lora_alpha=32, lora_dropout=0.0, learning_rate=5e-4,
                    example_passes=240, min_epochs=2, max_epochs=12),
    # Bigger adapter, gentler steps, more passes, dropout against overfitting.
    "thorough": Preset(lora_r=32, lora_alpha=64, lora_dropout=0.05, learning_rate=2e-4,
                       example_passes=600, min_epochs=3, max_epochs=30),
}


def _setting(default, allowed: str, **rules):
    """A field whose rules pydantic checks; `allowed` is what the user is told when a value breaks them."""
    return Field(default, description=allowed, **rules)


class TrainConfig(BaseModel):
    """Every setting of a run. Built from user input (flags, the dialog, config.json), so a bad value
    raises ChattuneError naming the setting and what it accepts, never pydantic's own report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = _setting("sft", f"one of {', '.join(METHODS)}")
    preset: PresetName = _setting("quick", f"one of {', '.join(PRESETS)}")
    # None: from the preset, scaled to the dataset (see Preset). int | float: whole epochs stay whole in
    # config.json and on screen ("2 epochs", not "2.0").
    epochs: int | float | None = _setting(None, "a number greater than 0", gt=0)
    learning_rate: float | None = _setting(None, "a number greater than 0", gt=0)
    lora_r: int | None = _setting(None, "a whole number greater than 0", gt=0)
    lora_alpha: int | None = _setting(None, "a whole number greater than 0", gt=0)
    lora_dropout: float | None = _setting(None, "a value in [0, 1)", ge=0, lt=1)
    # "all-linear" lets peft pick every linear layer but the output head, for any architecture.
    target_modules: Literal["all-linear"] | ModuleNames = _setting(
        "all-linear", "'all-linear' or a list of module names")
    # The lowest share of the decoder layers gets no LoRA, so the backward pass stops above them: a
    # quarter less time to the adapter on a CPU, and the same learning (`bench learn`; README, How a
    # run learns). 0: every layer. At least 8 layers stay adapted (all of a model with fewer).
    freeze_lower: float = _setting(0.5, "a share from 0 (LoRA on every layer) to 0.9", ge=0, le=0.9)
    batch_size: int = _setting(4, "a whole number, at least 1", ge=1)
    grad_accum: int = _setting(1, "a whole number, at least 1", ge=1)
    max_seq_len: int = _setting(1024, "at least 16 tokens", ge=16)
    seed: int = _setting(42, "a whole number")
    # auto: 4bit (QLoRA) on CUDA, none (LoRA) on CPU
    quantization: Quantization = _setting("auto", f"one of {', '.join(QUANTIZATIONS)}")
    device: Device = _setting("auto", f"one of {', '.join(DEVICES)}")  # auto: cuda when torch sees a GPU
    # Compute precision. auto: bf16 on CUDA (fp16 below compute capability 8.0); bf16 on a CPU with
    # AMX/AVX512-BF16 (`bench train`: 1.5x fp32's tokens/s on SmolLM2-135M, the base held in bf16;
    # the same learning in `bench learn`), fp32 on other CPUs.
    precision: Precision = _setting("auto", f"one of {', '.join(PRECISIONS)}")
    # a chat-template override from prompts/templates/, as in the chat
    template: str | None = _setting(None, "a template name from prompts/templates/")
    # The learning recipe (engine/train/mix.py). augment: rewordings per example (0: the examples as
    # given, nothing else); paraphrase: let the base model write some of them; replay: the base's own
    # answers to general prompts, as a share of the other training rows (0: none).
    augment: int = _setting(4, "0 (no rewordings) to 20", ge=0, le=20)
    paraphrase: bool = _setting(True, "true or false")
    replay: float = _setting(0.25, "a share from 0 (no replay) to 4", ge=0, le=4)
    # > 0: replay is distilled, not imitated: each step adds this weight x KL(base || adapter) on the
    # base's answers (engine/train/distill.py); 0: the replay rows are plain training rows.
    replay_kl: float = _setting(1.0, "0 (replay as plain rows) or a positive weight", ge=0)
    # False: each batch is flattened into one sequence without padding (padding-free).
    # True: examples are packed best-fit into rows of max_seq_len tokens (fewer, fuller steps).
    packing: bool = _setting(False, "true or false")
    lr_scheduler: Scheduler = _setting("linear", f"one of {', '.join(SCHEDULERS)}")
    warmup_ratio: float = _setting(0.05, "a value in [0, 1)", ge=0, lt=1)
    weight_decay: float = _setting(0.0, "a number, at least 0", ge=0)
    max_grad_norm: float = _setting(1.0, "0 (no clipping) or a positive norm", ge=0)
    dpo_beta: float = _setting(0.1, "a number greater than 0", gt=0)
    # None: on with 4bit or CUDA, off for LoRA on CPU
    gradient_checkpointing: bool | None = _setting(None, "true, false, or unset (decided by the device)")
    save_every_steps: int = _setting(0, "0 (every epoch) or a step count", ge=0)
    # the scorecard (engine.evaluate) after training, in the same child
    evaluate: bool = _setting(True, "true or false")
    # CPU threads for torch; None: all cores (the child runs at lower priority)
    threads: int | None = _setting(None, "at least 1, or leave it unset for all cores", ge=1)
    num_gpus: int = _setting(1, "a whole number, at least 1", ge=1)  # > 1: DDP through `accelerate launch`
    # free-form notes kept with the run (e.g. the base it was planned for)
    extra: dict = _setting({}, "a JSON object")

    def __init__(self, **settings):  # pydantic runs it for model_validate too
        try:
            super().__init__(**settings)
        except ValidationError as err:
            raise _user_error(err) from None

    @model_validator(mode="after")
    def _gpus_need_cuda(self) -> TrainConfig:
        if self.num_gpus > 1 and self.device == "cpu":
            raise ChattuneError("invalid training setting: num_gpus > 1 with device cpu",
                                "multi-GPU training needs --device cuda or auto")
        return self

    def resolved(self, n_examples: int) -> TrainConfig:
        """A copy with every preset-dependent field filled for a dataset of `n_examples`."""
        preset = PRESETS[self.preset]
        epochs = self.epochs
        if epochs is None and self.mixes:
            rows = self.training_rows(n_examples)
            epochs = max(preset.epochs_for(n_examples, rows),
                         math.ceil(preset.mixed_min_steps / self.steps_per_epoch(rows)))
        elif epochs is None:
            epochs = preset.epochs_for(n_examples)
        return self.model_copy(deep=True, update={
            "epochs": epochs,
            "learning_rate": (self.learning_rate if self.learning_rate is not None
                              else preset.lr_for(n_examples, self.method, mixed=self.mixes)),
            "lora_r": self.lora_r if self.lora_r is not None else preset.lora_r,
            "lora_alpha": self.lora_alpha if self.lora_alpha is not None else preset.lora_alpha,
            "lora_dropout": self.lora_dropout if self.lora_dropout is not None else preset.lora_dropout,
        })

    def with_overrides(self, **overrides) -> TrainConfig:
        """A copy with the given fields changed; None values mean "not given" and are skipped."""
        return TrainConfig(**{**self.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})

    @property
    def mixes(self) -> bool:
        """SFT with rewordings (and replay): the learning recipe of engine/train/mix.py."""
        return self.method == "sft" and self.augment > 0

    def training_rows(self, n_examples: int) -> int:
        """About how many rows the mix trains on for `n_examples` of the user's (plan and epochs)."""
        if not self.mixes:
            return n_examples
        rows = n_examples * (2 + self.augment)  # as given, under the other system prompt, rewordings
        if self.replay > 0 and not self.distills:  # distilled replay rides along with these rows instead
            rows += min(REPLAY_TRAIN_MAX, max(1, round(self.replay * rows)))
        return rows

    @property
    def distills(self) -> bool:
        """Replay is distilled (KL to the base), one process only: under DDP it is plain rows."""
        return self.replay > 0 and self.replay_kl > 0 and self.num_gpus == 1

    def steps_per_epoch(self, n_examples: int) -> int:
        """Optimizer steps per epoch without packing (packing makes fewer, decided by token counts)."""
        per_step = self.batch_size * self.grad_accum * max(1, self.num_gpus)
        return max(1, math.ceil(n_examples / per_step))

    def to_dict(self) -> dict:
        """The JSON form written into a run's config.json."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Read back a run's config.json section (older runs lack newer settings: they get defaults)."""
        try:
            return cls.model_validate(data)
        except UnknownSettings as err:  # a newer chattune wrote it, or a hand edit
            raise ChattuneError(f"unknown training setting(s) in config: {', '.join(err.names)}",
                                "remove them, or update chattune") from None
        except ValidationError as err:  # not even an object: pydantic stops before __init__
            raise ChattuneError(f"training settings in config must be a JSON object, got "
                                f"{type(err.errors()[0]['input']).__name__}", "start a new run") from None


class UnknownSettings(ChattuneError):
    """Setting names TrainConfig does not have: a typo, or a run written by a newer chattune."""

    def __init__(self, names: list[str]):
        self.names = names
        super().__init__(f"unknown training setting(s): {', '.join(names)}",
                         f"known settings: {', '.join(sorted(TrainConfig.model_fields))}")


def _user_error(err: ValidationError) -> ChattuneError:
    """pydantic's report as one line: the unknown settings, else the first bad value and what it accepts."""
    problems = err.errors()
    unknown = [str(p["loc"][0]) for p in problems if p["type"] == "extra_forbidden"]
    if unknown:
        return UnknownSettings(unknown)
    name, value = str(problems[0]["loc"][0]), problems[0]["input"]
    shown = repr(value) if isinstance(value, str) else value
    return ChattuneError(f"invalid training setting: {name} = {shown}", f"use {TrainConfig.model_fields[name].description}")
