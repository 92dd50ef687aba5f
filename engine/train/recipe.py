"""The training recipe the child process runs, top to bottom: setup, train, save, cleanup.

setup    decide device, precision and quantization; load the base model and the run's snapshot
train    TRL's SFTTrainer (loss on the answer only) or DPOTrainer, with a LoRA adapter (QLoRA on
         4-bit weights); EventCallback reports progress and stops cleanly on cancel
save     the peft adapter (safetensors) into adapter/, and its GGUF LoRA twin into adapter.gguf (or, when
         it cannot be one, the merged GGUF that the caller's merged_chat_side builds)
cleanup  checkpoints stay, so a cancelled or crashed run can resume; the store is never touched

Every decision that is not in config.json (the device "auto" picked, the library versions) is
written back into config.json's "runtime" section, so the run folder explains itself.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.adapters import GGUF_FILE, PEFT_DIR
from engine.errors import ChattuneError
from engine.hardware import library_versions
from engine.models import base_cache_name, resolve_model, trainable_base
from engine.runfolder import (
    CHECKPOINTS_DIR,
    SNAPSHOT_DIR,
    EventLog,
    RunConfig,
    fingerprint,
    last_checkpoint,
    read_run_config,
    update_run_config,
)
from engine.train.config import FEW_EXAMPLES, TrainConfig
from engine.train.data import dpo_rows, fit_to_length, sft_rows
from engine.workspace import Workspace

# (peft dir, base dir, run dir, why the GGUF LoRA failed, progress) -> the one line saying what the chat
# loads instead. Handed in by the child's entry point: building it is export's merge, outside training.
MergedChatSide = Callable[[Path, Path, Path, ChattuneError, Callable[[str], None]], str]


class Cancelled(Exception):
    """A cancel that arrived before the Trainer ran: there is nothing to checkpoint yet."""


class CancelToken:
    """Set by the child's SIGTERM/SIGINT handler. Before training starts a cancel interrupts at
    once; once the Trainer runs, EventCallback saves a checkpoint at the next step and stops."""

    def __init__(self):
        self._event = threading.Event()
        self.interruptible = True

    def request(self) -> None:
        self._event.set()
        if self.interruptible:
            raise Cancelled()

    def is_set(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class Runtime:
    device: str  # "cpu" or "cuda"
    quantization: str  # "none" or "4bit"
    precision: str  # "fp32", "bf16" or "fp16" (engine.hardware.training_setup)
    gradient_checkpointing: bool
    optim: str
    rank: int
    local_rank: int
    world_size: int
    bnb_compute_dtype: str = "bf16"  # what 4-bit layers compute in
    reasons: dict = field(default_factory=dict)  # why "auto" became these (config.json's runtime says)

    @property
    def main(self) -> bool:
        return self.rank == 0


def run(run_dir: Path, log: EventLog, cancel: CancelToken, *, merged_chat_side: MergedChatSide,
        resume: bool = False) -> str:
    """Train the run in `run_dir`; returns the terminal event emitted: "done" or "cancelled"."""
    started = time.monotonic()
    run_dir = Path(run_dir)
    meta = read_run_config(run_dir)
    cfg = TrainConfig.from_dict(meta.config)

    # --- setup --------------------------------------------------------------------------------
    rt = decide_runtime(cfg)
    if rt.main:
        update_run_config(run_dir, runtime={**asdict(rt), "versions": library_versions()})
    _check_cancel(cancel)
    base_dir = _base_dir(run_dir, meta, log, rt)
    _check_cancel(cancel)
    mix = None
    if cfg.method == "sft":
        with _main_first(rt):  # rank 0 writes the mix, the other ranks of a multi-GPU run read it
            mix = _sft_mix(run_dir, meta, cfg, log) if rt.main else None
    _check_cancel(cancel)
    log.emit("status", phase="load", message=f"loading {meta.base.name} ({rt.device}, "
                                            f"{'QLoRA 4-bit' if rt.quantization == '4bit' else 'LoRA'})")
    tokenizer, model = load_base(base_dir, cfg, rt)
    _check_cancel(cancel)
    # Under DDP every rank reads the mix back from augment.jsonl, so all of them hold the rows in one order.
    train_rows, val_rows, tokens = load_data(run_dir, cfg, tokenizer, log, mix if rt.world_size == 1 else None)
    _check_cancel(cancel)

    # --- train --------------------------------------------------------------------------------
    from engine.train.callback import EventCallback

    callback = EventCallback(log, cancel, rt.device, start_fields={
        "run": run_dir.name, "method": cfg.method, "examples": mix.examples if mix else len(train_rows),
        "rows": len(train_rows), "val_examples": len(val_rows),
        "tokens": tokens, "epochs": cfg.epochs, "device": rt.device, "quantization": rt.quantization,
        "precision": rt.precision, "world_size": rt.world_size,
        "visible_gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "quantized_layers": sum(type(m).__name__ == "Linear4bit" for m in model.modules()),
    })
    trainer = build_trainer(cfg, rt, model, tokenizer, train_rows, val_rows, run_dir / CHECKPOINTS_DIR, callback)
    if mix is not None and mix.replay:
        from engine.train.distill import ReplayDistiller

        replay_rows, _ = fit_to_length(mix.replay, tokenizer, cfg.max_seq_len)
        # Half a batch of replay rows beside each batch of training rows (measured: see README).
        trainer.distiller = ReplayDistiller(tokenizer, replay_rows, per_step=max(1, cfg.batch_size // 2),
                                            weight=cfg.replay_kl, seed=cfg.seed)
    checkpoint = last_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        log.warn("no_checkpoint", "no checkpoint to resume from: training starts from the beginning")
    callback.resumed_from = str(checkpoint) if checkpoint else None
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    cancel.interruptible = False  # saving the adapter takes seconds: let it finish
    if cancel.is_set() and trainer.state.global_step < trainer.state.max_steps:
        kept = last_checkpoint(run_dir)
        log.emit("cancelled", step=trainer.state.global_step, checkpoint=kept, log=run_dir / "train.log")
        return "cancelled"
    _report_best(trainer, log)

    # --- save ---------------------------------------------------------------------------------
    adapter_dir, gguf_path = run_dir / PEFT_DIR, None
    if rt.main:
        log.emit("status", phase="save", message="saving the adapter")
        save_adapter(trainer.accelerator.unwrap_model(trainer.model), adapter_dir)
        gguf_path = convert_to_gguf(adapter_dir, base_dir, run_dir / GGUF_FILE, log, merged_chat_side)
    runtime_s = trainer.state.log_history[-1].get("train_runtime") if trainer.state.log_history else None
    tokens_seen = trainer.state.num_input_tokens_seen
    log.emit("done", adapter=adapter_dir, gguf=gguf_path, final_loss=callback.last_loss,
             eval_loss=callback.last_eval, steps=trainer.state.global_step,
             tokens_per_s=tokens_seen / runtime_s if runtime_s and tokens_seen else None,
             elapsed_s=time.monotonic() - started, cpu_s=_cpu_seconds())
    return "done"


# --- setup ----------------------------------------------------------------------------------------


def decide_runtime(cfg: TrainConfig) -> Runtime:
    import torch

    from engine.hardware import cpu_bf16_flags, training_setup

    # The same decision `chattune doctor` shows: bf16 only where the GPU has it natively, else fp16.
    cuda = torch.cuda.is_available()
    setup = training_setup(cuda=cuda, capability=torch.cuda.get_device_capability() if cuda else None,
                           device=cfg.device, quantization=cfg.quantization, precision=cfg.precision,
                           cpu_bf16=bool(cpu_bf16_flags()))
    device, quantization, precision = setup.device, setup.quantization, setup.precision
    checkpointing = (cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None
                     else quantization == "4bit" or device == "cuda")
    # Paged optimizers page their state to CPU memory under GPU memory pressure: CUDA only.
    optim = "paged_adamw_8bit" if device == "cuda" and quantization == "4bit" else "adamw_torch"
    if device == "cpu" and cfg.threads:
        torch.set_num_threads(cfg.threads)
    return Runtime(device, quantization, precision, checkpointing, optim,
                   rank=int(os.environ.get("RANK", 0)), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                   world_size=int(os.environ.get("WORLD_SIZE", 1)), bnb_compute_dtype=setup.bnb_compute_dtype,
                   reasons=setup.reasons)


def _main_first(rt: Runtime):
    if rt.world_size == 1:
        return contextlib.nullcontext()
    from accelerate import PartialState

    return PartialState().main_process_first()


def _base_dir(run_dir: Path, meta: RunConfig, log: EventLog, rt: Runtime) -> Path:
    """The full-precision HF folder for the run's base model, checked against its fingerprint."""
    spec = resolve_model(meta.base.path)
    if fingerprint(spec.path) != meta.base.fingerprint:
        raise ChattuneError(f"the base model {spec.path} changed since run {run_dir.name!r} was set up",
                            "start a new run, or restore the original model file")
    workspace = Workspace(run_dir.parent.parent)

    def progress(message: str) -> None:
        log.emit("status", phase="base", message=message)

    if rt.world_size > 1:
        from accelerate import PartialState

        with PartialState().main_process_first():  # one rank builds the cache, the others reuse it
            return trainable_base(spec, workspace, progress=progress)
    return trainable_base(spec, workspace, progress=progress)


def load_base(base_dir: Path, cfg: TrainConfig, rt: Runtime):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.train.model_fit import fit_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    fit = fit_tokenizer(base_dir, tokenizer, cfg.template)  # template, padding, attention: from the model
    # bf16: the frozen base is held in bf16 (the CPU too: AMX then runs every matmul without the
    # per-step fp32->bf16 weight copies autocast makes); peft keeps the LoRA weights in fp32.
    kwargs = {"attn_implementation": fit.attn_implementation,
              "dtype": torch.bfloat16 if rt.precision == "bf16" else torch.float32}
    if rt.quantization == "4bit":
        from transformers import BitsAndBytesConfig

        from engine.hardware import TORCH_DTYPES

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, TORCH_DTYPES[rt.bnb_compute_dtype]),
        )
        kwargs["device_map"] = {"": rt.local_rank if rt.device == "cuda" else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(base_dir, use_safetensors=True, **kwargs)
    # No KV cache: besides costing memory, a cache makes transformers ignore position_ids when it
    # builds the attention mask, and a padding-free batch would then attend across its examples.
    model.config.use_cache = False
    if rt.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=rt.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    return tokenizer, model


def _sft_mix(run_dir: Path, meta: RunConfig, cfg: TrainConfig, log: EventLog):
    """The user's examples with their rewordings and replay (engine.train.prepare), built on rank 0
    before the model is loaded for training; the listing lands in the run folder."""
    from engine.engines import open_engine
    from engine.prompts import system_prompt
    from engine.train.prepare import sft_mix

    spec = resolve_model(meta.base.path)
    workspace = Workspace(run_dir.parent.parent)
    user_rows = sft_rows(run_dir / SNAPSHOT_DIR, "train")
    if not user_rows:
        raise ChattuneError("no SFT training examples in this run's snapshot",
                            "collect some approved or corrected replies first")
    kind = "llamacpp" if spec.is_gguf else "transformers"
    mix = sft_mix(run_dir, cfg, user_rows, lambda: open_engine(kind, spec, workspace, template=cfg.template),
                  workspace.cache_dir, base_cache_name(spec, meta.base.fingerprint, cfg.template), system_prompt(),
                  lambda message: log.emit("status", phase="data", message=message))
    log.emit("data", **mix.counts())
    if len(user_rows) < FEW_EXAMPLES:
        log.warn("few_examples", f"only {len(user_rows)} example(s) of yours: rewordings and replay help, but about "
                                 f"{FEW_EXAMPLES} or more curated examples give a much more reliable adapter")
    return mix


def load_data(run_dir: Path, cfg: TrainConfig, tokenizer, log: EventLog, mix=None) -> tuple[list, list, int]:
    """Training and validation rows, cut to max_seq_len: the SFT mix, or the snapshot's DPO pairs (all
    of them train: DPO has no generated validation)."""
    if mix is not None:
        raw_train, raw_val = mix.train, mix.val
    elif cfg.method == "sft":  # a rank > 0 of a multi-GPU run: rank 0 wrote the mix for everyone
        from engine.train.prepare import read_listing

        raw_train, raw_val = listing_rows(read_listing(run_dir))
    else:
        raw_train, raw_val = dpo_rows(run_dir / SNAPSHOT_DIR, "train"), []
    train_rows, stats = fit_to_length(raw_train, tokenizer, cfg.max_seq_len)
    val_rows, _ = fit_to_length(raw_val, tokenizer, cfg.max_seq_len)
    what = "approved or corrected replies" if cfg.method == "sft" else "corrections or A/B votes"
    if not train_rows:
        raise ChattuneError(f"no {cfg.method.upper()} training examples in this run's snapshot",
                            f"collect some {what} first")
    if stats["dropped"]:
        log.warn("too_long", f"{stats['dropped']} example(s) longer than {cfg.max_seq_len} tokens even "
                             "without their earlier turns were left out; raise --max-seq-len to keep them")
    if stats["trimmed"]:
        log.warn("trimmed", f"{stats['trimmed']} example(s) lost their oldest turns to fit "
                            f"{cfg.max_seq_len} tokens")
    return train_rows, val_rows, stats["tokens"]


def listing_rows(listing: list[dict]) -> tuple[list, list]:
    """augment.jsonl back into (train, val) prompt-completion rows (single-turn context only)."""
    rows: dict[str, list] = {"train": [], "val": []}
    for line in listing:
        if line["source"] == "base, distilled":
            continue  # distilled replay is not a training row (and a DDP run never distils)
        prompt = ([{"role": "system", "content": line["system"]}] if line["system"] else []) + \
            [{"role": "user", "content": line["question"]}]
        rows[line["split"]].append({"prompt": prompt, "completion": [{"role": "assistant", "content": line["answer"]}]})
    return rows["train"], rows["val"]


def _report_best(trainer, log: EventLog) -> None:
    """Which epoch's adapter is kept: the one with the lowest validation loss (rewordings and replay)."""
    best, metric = trainer.state.best_model_checkpoint, trainer.state.best_metric
    if best is None or metric is None:
        return
    step = int(Path(best).name.split("-")[-1])
    steps_per_epoch = max(1, trainer.state.max_steps / max(1e-9, trainer.args.num_train_epochs))
    log.emit("status", phase="best", message=f"kept the adapter of epoch {step / steps_per_epoch:.0f} "
                                             f"(step {step}): lowest validation loss {metric:.4f}")


# --- train ----------------------------------------------------------------------------------------


def build_trainer(cfg: TrainConfig, rt: Runtime, model, tokenizer, train_rows: list, val_rows: list,
                  output_dir: Path, callback):
    from datasets import Dataset, disable_progress_bars
    from transformers import set_seed

    disable_progress_bars()
    set_seed(cfg.seed)  # the LoRA weights are initialised inside the trainer's constructor
    lora = lora_config(cfg, model)
    by_steps = cfg.save_every_steps > 0
    common = dict(
        output_dir=str(output_dir), num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed, data_seed=cfg.seed, optim=rt.optim,
        use_cpu=rt.device == "cpu", bf16=rt.precision == "bf16", fp16=rt.precision == "fp16",
        gradient_checkpointing=rt.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if rt.gradient_checkpointing else None,
        logging_strategy="steps", logging_steps=1,
        eval_strategy="epoch" if val_rows else "no",
        save_strategy="steps" if by_steps else "epoch", save_steps=cfg.save_every_steps if by_steps else 500,
        save_total_limit=1, report_to=[],
        # The adapter kept is the epoch with the lowest validation loss: on rewordings never trained on
        # and on replay prompts, so it is the one that generalises and forgets least.
        load_best_model_at_end=bool(val_rows), metric_for_best_model="eval_loss", greater_is_better=False, disable_tqdm=True, dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        ddp_find_unused_parameters=False if rt.world_size > 1 else None,
    )
    train_ds = Dataset.from_list(train_rows)
    eval_ds = Dataset.from_list(val_rows) if val_rows else None
    if cfg.method == "sft":
        from trl import SFTConfig, SFTTrainer

        # Padding-free: each batch is flattened into one sequence, and the model keeps the examples
        # apart through position_ids (transformers builds a block-diagonal causal mask from them
        # for sdpa/eager attention). With packing, rows of max_seq_len are filled best-fit first.
        args = SFTConfig(**common, packing=cfg.packing, packing_strategy="bfd", padding_free=True,
                         max_length=cfg.max_seq_len if cfg.packing else None, completion_only_loss=True)
        from engine.train.distill import distilling

        trainer_class = distilling(SFTTrainer if rt.device == "cuda" else _cpu_sft_trainer())
        return trainer_class(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                             processing_class=tokenizer, peft_config=lora, callbacks=[callback])

    from trl import DPOConfig, DPOTrainer

    # DPOTrainer pads (its padding-free mode is off in trl 1.16); the reference model is the base
    # with the adapter disabled, so no second copy of the weights is held.
    args = DPOConfig(**common, max_length=cfg.max_seq_len, beta=cfg.dpo_beta)
    return DPOTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, peft_config=lora, callbacks=[callback])


MIN_ADAPTED_LAYERS = 8


def lora_config(cfg: TrainConfig, model):
    """The run's LoRA: on `cfg.target_modules` of the upper decoder layers, the lowest
    `cfg.freeze_lower` share left without (no gradient has to flow down through them)."""
    from peft import LoraConfig

    targets, layers = cfg.target_modules, None
    count = getattr(model.config.get_text_config(), "num_hidden_layers", None) or 0
    # A model with few layers keeps its LoRA on at least MIN_ADAPTED_LAYERS of them (all, below that):
    # one layer of a tiny model cannot learn a reply word for word.
    first = min(int(count * cfg.freeze_lower), max(0, count - MIN_ADAPTED_LAYERS))
    if first > 0:
        layers = list(range(first, count))
        if targets == "all-linear":  # peft takes a layer list only with module names
            targets = linear_module_names(model)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, layers_to_transform=layers, bias="none", task_type="CAUSAL_LM")


def linear_module_names(model) -> list[str]:
    """The names "all-linear" stands for: every linear layer's (4-bit ones included) but the output head's."""
    import torch

    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and module is not head})


def _cpu_sft_trainer():
    """SFTTrainer with a plain cross-entropy on the answers. TRL's fused LM head recomputes the logits
    in tiles to save GPU memory; on a CPU that costs about a third of every step (measured on
    SmolLM2-135M, whose 49k-token head is large next to its body), and memory is not the limit there.
    The head runs on the answer positions only (engine.train.answer_loss)."""
    from peft.helpers import disable_input_dtype_casting
    from transformers import Trainer
    from trl import SFTTrainer

    from engine.train.answer_loss import answer_loss

    class CpuSFTTrainer(SFTTrainer):
        head_on_answers_only = True  # False: the model's own loss, the head on every position (bench's "before")

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # Under bf16 autocast the LoRA matmuls run in bf16 whatever their input's dtype, so peft's
            # cast of each bf16 input up to the fp32 LoRA weights is a copy thrown away.
            with disable_input_dtype_casting(model, active=self.args.bf16):
                # The items count only where the model's own loss would take it (the Trainer then scales alike).
                items = num_items_in_batch if self.model_accepts_loss_kwargs else None
                found = answer_loss(model, inputs, items) if self.head_on_answers_only else None
                if found is None:
                    return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                                num_items_in_batch=num_items_in_batch)
            return found if return_outputs else found[0]

    return CpuSFTTrainer


# --- save -----------------------------------------------------------------------------------------


def save_adapter(model, adapter_dir: Path) -> None:
    """peft's adapter_config.json + adapter_model.safetensors, swapped in whole."""
    tmp = adapter_dir.with_name(f".{adapter_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    tmp.rename(adapter_dir)


def convert_to_gguf(adapter_dir: Path, base_dir: Path, out: Path, log: EventLog,
                    merged_chat_side: MergedChatSide) -> Path | None:
    """The GGUF LoRA for llama.cpp; a failed conversion costs the GGUF, never the trained adapter, and
    never leaves the chat without it: `merged_chat_side` builds a merged GGUF instead."""
    from engine.gguf_lora import convert_peft_to_gguf

    log.emit("status", phase="gguf", message="converting the adapter to a GGUF LoRA")
    try:
        return convert_peft_to_gguf(adapter_dir, base_dir, out)
    except ChattuneError as err:
        log.warn("gguf", merged_chat_side(adapter_dir, base_dir, out.parent, err,
                                          lambda message: log.emit("status", phase="gguf", message=message)))
        return None


# --- helpers --------------------------------------------------------------------------------------


def _check_cancel(cancel: CancelToken) -> None:
    if cancel.is_set():
        raise Cancelled()


def _cpu_seconds() -> float:
    """CPU time of this process: on a busy machine, cpu_s / cores says what an idle one would take."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

