"""What a training run does: one dataclass, two presets, and the rules that fill in what the user left open.

Every field can be set by the user (CLI flags, the TUI dialog). Fields left as None come from the
preset, scaled to the dataset size, when the run is planned (`resolved`). "auto" device and
quantization are decided by the child process, which is the one that imports torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from engine.errors import ChattuneError

METHODS = ("sft", "dpo")
DEVICES = ("auto", "cpu", "cuda")
QUANTIZATIONS = ("auto", "none", "4bit")
PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULERS = ("linear", "cosine", "constant")
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


@dataclass
class TrainConfig:
    method: str = "sft"
    preset: str = "quick"
    # None: from the preset, scaled to the dataset (see Preset).
    epochs: float | None = None
    learning_rate: float | None = None
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    # "all-linear" lets peft pick every linear layer but the output head, for any architecture.
    target_modules: str | list[str] = "all-linear"
    batch_size: int = 4
    grad_accum: int = 1
    max_seq_len: int = 1024
    seed: int = 42
    quantization: str = "auto"  # auto: 4bit (QLoRA) on CUDA, none (LoRA) on CPU
    device: str = "auto"  # auto: cuda when torch sees a GPU, else cpu
    # Compute precision. auto: bf16 on CUDA (fp16 below compute capability 8.0); bf16 on a CPU with
    # AMX/AVX512-BF16 (`bench train`: 1.07x fp32's tokens/s on SmolLM2-135M, the same learning in
    # `bench learn`), fp32 on other CPUs.
    precision: str = "auto"
    template: str | None = None  # a chat-template override from prompts/templates/, as in the chat
    # The learning recipe (engine/train/mix.py). augment: rewordings per example (0: the examples as
    # given, nothing else); paraphrase: let the base model write some of them; replay: the base's own
    # answers to general prompts, as a share of the other training rows (0: none).
    augment: int = 4
    paraphrase: bool = True
    replay: float = 0.25
    # > 0: replay is distilled, not imitated: each step adds this weight x KL(base || adapter) on the
    # base's answers (engine/train/distill.py); 0: the replay rows are plain training rows.
    replay_kl: float = 1.0
    # False: each batch is flattened into one sequence without padding (padding-free).
    # True: examples are packed best-fit into rows of max_seq_len tokens (fewer, fuller steps).
    packing: bool = False
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    dpo_beta: float = 0.1
    gradient_checkpointing: bool | None = None  # None: on with 4bit or CUDA, off for LoRA on CPU
    save_every_steps: int = 0  # 0: a checkpoint at the end of every epoch
    evaluate: bool = True  # the scorecard (engine.evaluate) after training, in the same child
    threads: int | None = None  # CPU threads for torch; None: all cores (the child runs at lower priority)
    num_gpus: int = 1  # > 1: DDP through `accelerate launch --multi_gpu`
    extra: dict = field(default_factory=dict)  # free-form notes kept with the run (e.g. the base it was planned for)

    def validate(self) -> TrainConfig:
        def bad(what: str, hint: str):
            raise ChattuneError(f"invalid training setting: {what}", hint)

        if self.method not in METHODS:
            bad(f"method {self.method!r}", f"use one of {', '.join(METHODS)}")
        if self.preset not in PRESETS:
            bad(f"preset {self.preset!r}", f"use one of {', '.join(PRESETS)}")
        if self.device not in DEVICES:
            bad(f"device {self.device!r}", f"use one of {', '.join(DEVICES)}")
        if self.quantization not in QUANTIZATIONS:
            bad(f"quantization {self.quantization!r}", f"use one of {', '.join(QUANTIZATIONS)}")
        if self.precision not in PRECISIONS:
            bad(f"precision {self.precision!r}", f"use one of {', '.join(PRECISIONS)}")
        if self.lr_scheduler not in SCHEDULERS:
            bad(f"lr scheduler {self.lr_scheduler!r}", f"use one of {', '.join(SCHEDULERS)}")
        for name in ("epochs", "learning_rate", "lora_r", "lora_alpha"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                bad(f"{name} = {value}", "it must be greater than 0")
        for name in ("batch_size", "grad_accum", "max_seq_len", "num_gpus"):
            if getattr(self, name) < 1:
                bad(f"{name} = {getattr(self, name)}", "it must be at least 1")
        if self.lora_dropout is not None and not 0 <= self.lora_dropout < 1:
            bad(f"lora_dropout = {self.lora_dropout}", "use a value in [0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            bad(f"warmup_ratio = {self.warmup_ratio}", "use a value in [0, 1)")
        if self.max_seq_len < 16:
            bad(f"max_seq_len = {self.max_seq_len}", "use at least 16 tokens")
        if self.augment < 0 or self.augment > 20:
            bad(f"augment = {self.augment}", "use 0 (no rewordings) to 20")
        if not 0 <= self.replay <= 4:
            bad(f"replay = {self.replay}", "use a share from 0 (no replay) to 4")
        if self.replay_kl < 0:
            bad(f"replay_kl = {self.replay_kl}", "use 0 (replay as plain rows) or a positive weight")
        if self.threads is not None and self.threads < 1:
            bad(f"threads = {self.threads}", "use at least 1, or leave it unset for all cores")
        if self.save_every_steps < 0:
            bad(f"save_every_steps = {self.save_every_steps}", "use 0 (every epoch) or a step count")
        if self.num_gpus > 1 and self.device == "cpu":
            bad("num_gpus > 1 with device cpu", "multi-GPU training needs --device cuda or auto")
        if not (self.target_modules == "all-linear" or isinstance(self.target_modules, list)
                and self.target_modules and all(isinstance(m, str) and m for m in self.target_modules)):
            bad(f"target_modules {self.target_modules!r}", "use 'all-linear' or a list of module names")
        return self

    def resolved(self, n_examples: int) -> TrainConfig:
        """A copy with every preset-dependent field filled for a dataset of `n_examples`."""
        self.validate()
        preset = PRESETS[self.preset]
        epochs = self.epochs
        if epochs is None and self.mixes:
            rows = self.training_rows(n_examples)
            epochs = max(preset.epochs_for(n_examples, rows),
                         math.ceil(preset.mixed_min_steps / self.steps_per_epoch(rows)))
        elif epochs is None:
            epochs = preset.epochs_for(n_examples)
        return replace(
            self,
            epochs=epochs,
            learning_rate=(self.learning_rate if self.learning_rate is not None
                           else preset.lr_for(n_examples, self.method, mixed=self.mixes)),
            lora_r=self.lora_r if self.lora_r is not None else preset.lora_r,
            lora_alpha=self.lora_alpha if self.lora_alpha is not None else preset.lora_alpha,
            lora_dropout=self.lora_dropout if self.lora_dropout is not None else preset.lora_dropout,
            target_modules=(list(self.target_modules) if isinstance(self.target_modules, list)
                            else self.target_modules),
        )

    def with_overrides(self, **overrides) -> TrainConfig:
        """A copy with the given fields changed; None values mean "not given" and are skipped."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ChattuneError(f"unknown training setting(s): {', '.join(unknown)}",
                                f"known settings: {', '.join(sorted(known))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None}).validate()

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
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ChattuneError(f"unknown training setting(s) in config: {', '.join(unknown)}",
                                "remove them, or update chattune")
        return cls(**data).validate()
