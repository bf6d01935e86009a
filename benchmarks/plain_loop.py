"""The baseline the engine is measured against: a plain fp32 PyTorch loop over a DataLoader.

It is written the way a tutorial writes it (contiguous layout, fp32, `.item()` per step for the
running loss) and trains exactly what the engine trains: the same model built under the same
seed, the same optimizer and schedule from the study, the same preloaded, normalized tensors
in the same order. With the engine forced to its plain choices the two loops agree to about
1e-7 in the training loss, so a difference left is the engine's numerics (bf16, layout).

It runs in a process of its own (`PlainWorker`), started fresh, because the engine tunes the
process's malloc for good (`interplay.devices.tune_malloc`) and a plain loop in the same
process would inherit that.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from interplay.config import Study
from interplay.data import DataSplits, load_data
from interplay.models import build_model
from interplay.studyfile import load_study
from interplay.training import make_optimizer, make_schedule


@dataclass
class PlainLoop:
    """One run of the plain loop, trained an epoch at a time so it can take turns."""

    study: Study
    data: DataSplits
    batch_size: int = 64
    epoch_seconds: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_acc: float = 0.0

    def __post_init__(self) -> None:
        cfg = self.study.training
        torch.manual_seed(cfg.seed)
        self.model = build_model(self.study.model, self.data.input_shape, self.data.num_classes)
        self.optimizer = make_optimizer(self.model, cfg)
        self.schedule = make_schedule(self.optimizer, cfg)
        self.dataset = TensorDataset(self.data.train_x, self.data.train_y)
        # Each epoch's order is the permutation the engine draws (torch.randperm from a
        # generator seeded with the run's seed), so both loops see the same batches in the same
        # order and the accuracy comparison is paired. RandomSampler would draw a spare
        # permutation per epoch and fall out of step after the first.
        self.shuffle = torch.Generator()
        self.shuffle.manual_seed(cfg.seed)

    def epoch(self) -> None:
        """Train one epoch (timed), then validate."""
        model, optimizer = self.model, self.optimizer
        model.train()
        start = time.perf_counter()
        running = 0.0
        order = torch.randperm(len(self.dataset), generator=self.shuffle).tolist()
        # The loader's own generator draws its worker seed, which would otherwise come from
        # the global RNG that dropout uses.
        loader = DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=order, generator=torch.Generator()
        )
        for x, y in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(y)
        self.epoch_seconds.append(time.perf_counter() - start)
        self.train_loss.append(running / len(self.dataset))
        self.val_acc = accuracy(model, self.data.val_x, self.data.val_y)
        if self.schedule is not None:
            self.schedule.step()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        correct += int((logits.argmax(dim=1) == y[start : start + batch_size]).sum())
    return correct / len(x)


def serve(conn: Connection, study_path: str, sets: list[str], threads: int) -> None:
    """The worker process: load the data once, then train runs and epochs on request."""
    torch.set_num_threads(threads)
    base = load_study(study_path, sets).base()
    data = load_data(base.data)
    loop: PlainLoop | None = None
    while True:
        command, seed = conn.recv()
        if command == "run":
            study = load_study(study_path, [*sets, f"training.seed={seed}"]).base()
            loop = PlainLoop(study, data, batch_size=study.training.batch_size)
            conn.send(None)
        elif command == "epoch" and loop is not None:
            loop.epoch()
            conn.send((loop.epoch_seconds[-1], loop.train_loss[-1], loop.val_acc))
        else:
            return


class PlainWorker:
    """The plain loop in a freshly spawned process, driven one epoch at a time."""

    def __init__(self, study_path: Path, sets: list[str], threads: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=serve, args=(child, str(study_path), sets, threads), daemon=True
        )
        self.process.start()
        self.epoch_seconds: list[float] = []
        self.val_acc = 0.0

    def start_run(self, seed: int) -> None:
        self.conn.send(("run", seed))
        self.conn.recv()
        self.epoch_seconds = []

    def epoch(self) -> None:
        self.conn.send(("epoch", None))
        seconds, _, self.val_acc = self.conn.recv()
        self.epoch_seconds.append(seconds)

    def close(self) -> None:
        self.conn.send(("stop", None))
        self.process.join(timeout=30)
