"""A TrainerCallback that turns the Trainer's progress into events, and stops it cleanly on cancel."""

from __future__ import annotations

import resource
import time

from transformers import TrainerCallback

from engine.runfolder import EventLog

OVERFIT_MARGIN = 0.01  # relative rise of the validation loss that counts as rising


class EventCallback(TrainerCallback):
    def __init__(self, log: EventLog, cancel, device: str, start_fields: dict):
        self.log = log
        self.cancel = cancel  # recipe.CancelToken
        self.device = device
        self.start_fields = start_fields
        self.resumed_from: str | None = None
        self.first_step = None  # (global_step, time) after the first step: warm-up excluded from ETA
        self.last_tokens = (0, None)  # (tokens seen, time) at the last step event
        self.epoch_losses: list[float] = []
        self.epoch_means: list[float] = []
        self.eval_losses: list[float] = []
        self.last_loss = None
        self.last_eval = None
        self.warned_overfit = False
        self.saved_step = None

    # --- progress ---------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # From here on a cancel waits for the next step boundary, so a checkpoint can be saved.
        self.cancel.interruptible = False
        self.last_tokens = (state.num_input_tokens_seen or 0, time.monotonic())
        trainable, total = model.get_nb_trainable_parameters() if hasattr(model, "get_nb_trainable_parameters") \
            else (None, None)
        self.log.emit("start", **self.start_fields, step=state.global_step, max_steps=state.max_steps,
                      trainable_params=trainable, total_params=total, resumed_from=self.resumed_from)

    def on_step_end(self, args, state, control, **kwargs):
        if self.first_step is None:
            self.first_step = (state.global_step, time.monotonic())
        if self._cancel_requested(args):
            # Save where we are, then stop: resume continues from exactly this step.
            control.should_save = True
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return
        now = time.monotonic()
        tokens = state.num_input_tokens_seen or 0
        seen, since = self.last_tokens
        tokens_per_s = (tokens - seen) / (now - since) if since is not None and now > since else None
        self.last_tokens = (tokens, now)
        loss = float(logs["loss"])
        self.last_loss = loss
        self.epoch_losses.append(loss)
        extra = {key.replace("rewards/", "reward_"): logs[key]
                 for key in ("rewards/margins", "rewards/accuracies") if key in logs}
        self.log.emit(
            "step", step=state.global_step, max_steps=state.max_steps, epoch=state.epoch, loss=loss,
            lr=logs.get("learning_rate"), grad_norm=logs.get("grad_norm"), tokens_per_s=tokens_per_s,
            eta_s=self._eta(state, now), peak_mem_mb=self._peak_mem_mb(), **extra,
        )

    def on_epoch_end(self, args, state, control, **kwargs):
        mean = sum(self.epoch_losses) / len(self.epoch_losses) if self.epoch_losses else None
        if mean is not None:
            self.epoch_means.append(mean)
        self.epoch_losses = []
        self.log.emit("epoch", step=state.global_step, epoch=round(state.epoch or 0), train_loss=mean)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = metrics or {}
        if "eval_loss" not in metrics:
            return
        loss = float(metrics["eval_loss"])
        self.last_eval = loss
        self.eval_losses.append(loss)
        self.log.emit("eval", step=state.global_step, epoch=state.epoch, eval_loss=loss)
        self._check_overfitting()

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.saved_step:
            return  # a cancel on an epoch's last step saves the same checkpoint twice
        self.saved_step = state.global_step
        self.log.emit("checkpoint", step=state.global_step, path=f"{args.output_dir}/checkpoint-{state.global_step}")

    # --- helpers ----------------------------------------------------------------------------

    def _cancel_requested(self, args) -> bool:
        """In a multi-GPU run every rank must stop at the same step, so the ranks agree first."""
        wanted = self.cancel.is_set()
        if args.world_size > 1:
            import torch
            import torch.distributed as dist

            flag = torch.tensor([1.0 if wanted else 0.0], device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            wanted = bool(flag.item())
        return wanted

    def _check_overfitting(self) -> None:
        if self.warned_overfit or len(self.eval_losses) < 2 or len(self.epoch_means) < 2:
            return
        (eval_before, eval_now), (train_before, train_now) = self.eval_losses[-2:], self.epoch_means[-2:]
        if eval_now > eval_before * (1 + OVERFIT_MARGIN) and train_now < train_before:
            self.warned_overfit = True
            self.log.warn(
                "overfitting",
                f"validation loss rose ({eval_before:.3f} -> {eval_now:.3f}) while training loss fell "
                f"({train_before:.3f} -> {train_now:.3f}): the adapter is memorising its examples; "
                "use fewer epochs, or add more varied examples",
            )

    def _eta(self, state, now: float) -> float | None:
        if self.first_step is None or not state.max_steps:
            return None
        step0, t0 = self.first_step
        done = state.global_step - step0
        if done <= 0:
            return None
        return (now - t0) / done * max(0, state.max_steps - state.global_step)

    def _peak_mem_mb(self) -> float:
        if self.device == "cuda":
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
