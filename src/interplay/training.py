"""The training engine: one run of one configuration and seed.

The loop keeps every number on the device and reads them once per epoch: a `.item()` per
step would make the host wait for each batch, which costs more than the small models here.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from interplay.config import Study, TrainingConfig
from interplay.devices import Engine, flush_denormals, pick_device, pick_engine, tune_malloc
from interplay.rewrites import Undo, keep_grads_channels_last, pool_before_relu

if TYPE_CHECKING:
    from rich.progress import Progress

    from interplay.data import DataSplits
    from interplay.tracking import MetricSink

logger = logging.getLogger(__name__)

RunState = Literal["complete", "pruned", "failed"]
# Steps between checks for a non-finite loss: often enough to stop a diverging run at once,
# rare enough that the one host sync per check costs nothing measurable.
NONFINITE_CHECK_EVERY = 16
# Big enough to amortize the per-batch overhead, small enough that the activations of the
# usual models stay below the malloc threshold that tune_malloc sets (no page faults).
EVAL_BATCH = 256

# Called after each epoch with its metrics; returns True to prune the run there.
EpochCallback = Callable[[int, dict[str, float]], bool]


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite."""


@dataclass
class RunResult:
    """What one run produced; `history` holds one dict of metrics per epoch."""

    state: RunState
    reason: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    engine: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0
    stopped_early: bool = False
    best_epoch: int = 0
    test_acc: float | None = None
    test_loss: float | None = None
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    @property
    def final(self) -> dict[str, float]:
        return dict(self.history[-1]) if self.history else {}


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (weights, dropout) and return a generator for shuffling."""
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Batches covering n samples, never leaving a last batch of a single sample.

    Batch normalization cannot train on one sample per channel, so a lone remainder is
    folded into the batch before it, for any dataset size and batch size.
    """
    bounds = list(range(0, n, batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def make_optimizer(
    model: nn.Module, cfg: TrainingConfig, *, fused: bool = False
) -> torch.optim.Optimizer:
    """The study's optimizer; `fused` runs each step as one kernel per device (CPU, CUDA)."""
    opt = cfg.optimizer
    # Fused and foreach kernels are exclusive; unfused, torch keeps its default (foreach).
    kind: dict[str, Any] = {"fused": True} if fused else {}
    if opt.name == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=opt.lr,
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
            **kind,
        )
    if opt.name == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay, **kind
        )
    return torch.optim.Adam(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay, **kind)


def make_schedule(optimizer: torch.optim.Optimizer, cfg: TrainingConfig) -> Any:
    sched = cfg.schedule
    if sched.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, sched.step_size, gamma=sched.gamma)
    if sched.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if sched.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=sched.gamma, patience=sched.patience
        )
    return None


def _autocast(engine: Engine) -> contextlib.AbstractContextManager[Any]:
    if engine.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=engine.device.type, dtype=engine.autocast_dtype)


def _to_device(x: torch.Tensor, engine: Engine) -> torch.Tensor:
    x = x.to(engine.device, non_blocking=True)
    if engine.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.inference_mode()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, engine: Engine
) -> tuple[float, float]:
    """Mean loss and accuracy of the model in eval mode over a preloaded tensor set."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=engine.device)
    correct = torch.zeros((), device=engine.device, dtype=torch.long)
    for part in batch_slices(len(x), EVAL_BATCH):
        xb, yb = x[part], y[part]
        with _autocast(engine):
            logits = model(xb)
        loss_sum += nn.functional.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(dim=1) == yb).sum()
    model.train(was_training)
    n = max(len(x), 1)
    return loss_sum.item() / n, correct.item() / n


class Trainer:
    """Trains one model on preloaded tensors; `run()` returns a RunResult.

    Args:
        study: the resolved study (its model, training and data settings).
        data: preloaded splits from `interplay.data.load_data`.
        sink: where params and metrics go (MLflow or nothing).
        on_epoch: called after each epoch; returning True prunes the run.
        progress: a Rich Progress to show the epoch bar in; none for quiet runs.
        evaluate_test: also evaluate the held-out test set once at the end.
        model: a ready model to train instead of building one from the study.
        epoch_log_level: level of the one-line-per-epoch log (DEBUG inside a study).
    """

    def __init__(
        self,
        study: Study,
        data: DataSplits,
        *,
        sink: MetricSink | None = None,
        on_epoch: EpochCallback | None = None,
        progress: Progress | None = None,
        evaluate_test: bool = False,
        model: nn.Module | None = None,
        epoch_log_level: int = logging.INFO,
    ) -> None:
        from interplay.models import build_model

        self.epoch_log_level = epoch_log_level
        self.cfg = study.training
        self.study = study
        self.data = data
        self.sink = sink
        self.on_epoch = on_epoch
        self.progress = progress
        self.evaluate_test = evaluate_test
        threads_before = torch.get_num_threads()
        if self.cfg.threads is not None:
            torch.set_num_threads(self.cfg.threads)
        self.generator = seed_everything(self.cfg.seed)
        device = pick_device(self.cfg.device)
        self.model = model or build_model(study.model, data.input_shape, data.num_classes)
        self.engine = pick_engine(self.model, device, self.cfg.precision)
        self.model.to(device)
        # Exact changes for speed (interplay.rewrites), undone when the run ends.
        moved, undo_moves = pool_before_relu(self.model)
        self.engine = dataclasses.replace(self.engine, pools_moved=moved)
        # The thread count is the process's; the caller gets its own back when the run ends.
        self.undo: list[Undo] = [lambda: torch.set_num_threads(threads_before), undo_moves]
        self.ran = False
        if self.engine.channels_last:
            # torch's type stubs leave out Module.to's memory_format keyword.
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.undo.append(keep_grads_channels_last(self.model))
        # Data stays on the device for the whole run: one copy, no loader workers.
        self.train_x = _to_device(data.train_x, self.engine)
        self.train_y = data.train_y.to(device)
        self.val_x = _to_device(data.val_x, self.engine)
        self.val_y = data.val_y.to(device)
        if self.engine.tuned_malloc and not tune_malloc():
            self.engine = dataclasses.replace(self.engine, tuned_malloc=False)
        if device.type == "cuda":
            # Every training batch but the last has one shape, so the tuned kernels are reused.
            torch.backends.cudnn.benchmark = True
        self.optimizer = make_optimizer(self.model, self.cfg, fused=self.engine.fused_optimizer)
        self.schedule = make_schedule(self.optimizer, self.cfg)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.train_x)
        order = torch.randperm(n, generator=self.generator).to(self.engine.device)
        # A gather per batch costs half of one shuffled copy of the whole set per epoch
        # (measured on CPU) and needs no second copy of the data in device memory.
        for part in batch_slices(n, self.cfg.batch_size):
            idx = order[part]
            yield _to_device(self.train_x[idx], self.engine), self.train_y[idx]

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        model, engine = self.model, self.engine
        model.train()
        n = len(self.train_x)
        steps = len(batch_slices(n, self.cfg.batch_size))
        task = None
        if self.progress is not None:
            task = self.progress.add_task(f"epoch {epoch}/{self.cfg.epochs}", total=steps)
        loss_sum = torch.zeros((), device=engine.device)
        correct = torch.zeros((), device=engine.device, dtype=torch.long)
        bad_step = torch.full((), -1, device=engine.device, dtype=torch.long)
        start = time.perf_counter()
        for step, (xb, yb) in enumerate(self._batches()):
            with _autocast(engine):
                logits = model(xb)  # (B, classes)
            loss = nn.functional.cross_entropy(logits.float(), yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

            loss = loss.detach()
            loss_sum += loss * len(yb)
            correct += (logits.detach().argmax(dim=1) == yb).sum()
            # Remember the first step whose loss was not finite, without waiting on the device.
            first_bad = (~torch.isfinite(loss)) & (bad_step < 0)
            bad_step = torch.where(first_bad, torch.full_like(bad_step, step), bad_step)
            check = (step + 1) % NONFINITE_CHECK_EVERY == 0 or step + 1 == steps
            if check and bad_step.item() >= 0:
                raise NonFiniteLoss(
                    f"the training loss became {loss_sum.item():.4g} (not finite) at epoch "
                    f"{epoch}, step {bad_step.item() + 1}; lower optimizer.lr or add "
                    "normalization"
                )
            if self.sink is not None:
                self.sink.tick()  # a clock read unless something is due to be sent
            if task is not None and self.progress is not None:
                self.progress.advance(task)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if task is not None and self.progress is not None:
            self.progress.remove_task(task)
        return {
            "train_loss": loss_sum.item() / n,
            "train_acc": correct.item() / n,
            "epoch_seconds": seconds,
            "images_per_s": n / seconds if seconds > 0 else math.inf,
        }

    def run(self) -> RunResult:
        if self.ran:
            # The engine's changes to the model were undone when the first run ended.
            raise RuntimeError("a Trainer trains once; make a new one for another run")
        self.ran = True
        if self.engine.flush_denormals:
            flushed, undo_flush = flush_denormals()
            self.engine = dataclasses.replace(self.engine, flush_denormals=flushed)
            self.undo.append(undo_flush)
        result = RunResult(state="complete", engine=self.engine.as_params())
        result.model = self.model
        best_loss, best_state, since_best = math.inf, None, 0
        patience = self.cfg.early_stopping.patience
        start = time.perf_counter()
        try:
            for epoch in range(1, self.cfg.epochs + 1):
                metrics = self._train_epoch(epoch)
                val_loss, val_acc = evaluate(self.model, self.val_x, self.val_y, self.engine)
                if not math.isfinite(val_loss):
                    raise NonFiniteLoss(
                        f"the validation loss became {val_loss} (not finite) at epoch {epoch}; "
                        "lower optimizer.lr or add normalization"
                    )
                metrics.update(
                    val_loss=val_loss,
                    val_acc=val_acc,
                    train_val_gap=metrics["train_acc"] - val_acc,
                    lr=self.optimizer.param_groups[0]["lr"],
                )
                result.history.append(metrics)
                if self.sink is not None:
                    self.sink.log_metrics(metrics, step=epoch)
                logger.log(
                    self.epoch_log_level,
                    "epoch %d/%d: train_loss %.4f  train_acc %.2f%%  val_loss %.4f  "
                    "val_acc %.2f%%  %.1fs  %.0f img/s",
                    epoch,
                    self.cfg.epochs,
                    metrics["train_loss"],
                    100 * metrics["train_acc"],
                    val_loss,
                    100 * val_acc,
                    metrics["epoch_seconds"],
                    metrics["images_per_s"],
                )
                if self.schedule is not None:
                    is_plateau = isinstance(
                        self.schedule, torch.optim.lr_scheduler.ReduceLROnPlateau
                    )
                    self.schedule.step(val_loss) if is_plateau else self.schedule.step()

                if val_loss < best_loss - self.cfg.early_stopping.min_delta:
                    best_loss, since_best, result.best_epoch = val_loss, 0, epoch
                    if patience is not None:
                        best_state = copy.deepcopy(self.model.state_dict())
                else:
                    since_best += 1
                if self.on_epoch is not None and self.on_epoch(epoch, metrics):
                    result.state, result.reason = "pruned", f"pruned after epoch {epoch}"
                    break
                if patience is not None and since_best >= patience:
                    result.stopped_early = True
                    logger.info(
                        "early stopping: val_loss has not improved for %d epochs", patience
                    )
                    break
        except NonFiniteLoss as err:
            result.state, result.reason = "failed", str(err)
            logger.warning("run failed: %s", err)
        finally:
            # The returned model is the model as written, without the engine's hooks.
            for undo in reversed(self.undo):
                undo()
        result.duration_s = time.perf_counter() - start

        if result.state == "complete" and best_state is not None:
            self.model.load_state_dict(best_state)
        if self.evaluate_test and result.state == "complete":
            result.test_loss, result.test_acc = self._evaluate_test()
        return result

    def _evaluate_test(self) -> tuple[float, float]:
        if self.data.test_x is None or self.data.test_y is None:
            raise ValueError("evaluate_test needs data loaded with with_test=True")
        x = _to_device(self.data.test_x, self.engine)
        return evaluate(self.model, x, self.data.test_y.to(self.engine.device), self.engine)


def train(
    study: Study,
    data: DataSplits,
    *,
    sink: MetricSink | None = None,
    on_epoch: EpochCallback | None = None,
    progress: Progress | None = None,
    evaluate_test: bool = False,
) -> RunResult:
    """Train one run of a resolved study on preloaded data (a notebook-friendly entry point).

    Args:
        study: a resolved Study (for example `load_study(path).base()`).
        data: splits from `interplay.data.load_data(study.data)`.
        sink: a tracking sink (see `interplay.tracking`), or None to log nothing.
        on_epoch: called with (epoch, metrics) after each epoch; True prunes the run.
        progress: a Rich Progress for the epoch bar, or None.
        evaluate_test: evaluate the held-out test set once at the end.

    Returns:
        The RunResult: state, per-epoch history, engine choices, test accuracy if asked.
    """
    trainer = Trainer(
        study,
        data,
        sink=sink,
        on_epoch=on_epoch,
        progress=progress,
        evaluate_test=evaluate_test,
    )
    return trainer.run()
