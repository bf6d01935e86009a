"""The interplay engine against a plain fp32 PyTorch loop, side by side in one run.

    .venv/bin/python benchmarks/engine_vs_plain.py            # the full run (~12 minutes)
    .venv/bin/python benchmarks/engine_vs_plain.py --quick    # a smoke run (under a minute)

Both loops train the reference CNN (studies/baseline.yaml) at batch 64 on the same
Fashion-MNIST tensors, for the same epochs and seeds and in the same batch order, taking
turns epoch by epoch so that a change in machine load hits both. The plain loop runs in a
process of its own, started fresh, because the engine tunes its own process's malloc for good.
It prints markdown tables: the machine, training images/s and GFLOP/s of each loop against
measured matmul peaks, the speed ratio, validation accuracy per seed, the MLflow logging share
of a run and CLI start-up times. docs/performance.md holds the figures of such runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from interplay.config import Study
from interplay.data import DataSplits, load_data
from interplay.models import build_model, summary_of
from interplay.studyfile import load_study
from interplay.training import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
# MLflow sets up its own logger on import; keep its INFO lines out of the tables.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

from machine import LoadMonitor, machine_lines, matmul_peak  # noqa: E402
from overheads import cli_startup, logging_share, store_creation_seconds  # noqa: E402
from plain_loop import PlainWorker  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "studies" / "baseline.yaml"
# Forward, input-gradient and weight-gradient passes each cost about one forward's MACs,
# and a MAC is two FLOPs.
TRAIN_FLOPS_PER_MAC = 6


@dataclass
class LoopRuns:
    """Every epoch of one loop across seeds, and its validation accuracy per seed."""

    name: str
    choices: str
    epoch_seconds: list[list[float]] = field(default_factory=list)  # per seed, per epoch
    val_acc: list[float] = field(default_factory=list)

    def images_per_s(self, images_per_epoch: int) -> float:
        total = sum(sum(seconds) for seconds in self.epoch_seconds)
        return images_per_epoch * sum(len(s) for s in self.epoch_seconds) / total

    def epoch_rates(self, images_per_epoch: int, first: bool) -> list[float]:
        return [
            images_per_epoch / s
            for seed in self.epoch_seconds
            for i, s in enumerate(seed)
            if (i == 0) == first
        ]


def engine_choices(params: dict[str, str]) -> str:
    layout = "channels-last" if params["engine.channels_last"] == "true" else "contiguous"
    words = [params["engine.precision"], layout]
    if params.get("engine.fused_optimizer") == "true":
        words.append("fused optimizer")
    if params.get("engine.tuned_malloc") == "true":
        words.append("tuned malloc")
    if params.get("engine.pool_before_relu", "0") != "0":
        words.append("pool before ReLU")
    if params.get("engine.flush_denormals") == "true":
        words.append("denormals flushed")
    return ", ".join(words)


def common_sets(args: argparse.Namespace) -> list[str]:
    sets = [f"training.batch_size={args.batch_size}", f"training.epochs={args.epochs}"]
    if args.subset is not None:
        sets.append(f"data.subset={args.subset}")
    return sets


def study_for(seed: int, args: argparse.Namespace) -> Study:
    return load_study(BASELINE, [*common_sets(args), f"training.seed={seed}"]).base()


def compare(args: argparse.Namespace, data: DataSplits) -> tuple[LoopRuns, LoopRuns, Any]:
    """Train both loops for every seed, taking turns epoch by epoch.

    The host's speed drifts by tens of percent over minutes, so whole runs one after the
    other would compare different moments; epoch by epoch, a slow spell hits both loops.
    The plain loop waits in its own process while the engine trains, and the other way
    round; which goes first alternates between seeds.
    """
    plain = LoopRuns("plain loop", "fp32, contiguous, DataLoader, default malloc")
    engine = LoopRuns("interplay engine", "")
    with LoadMonitor() as load:
        worker = PlainWorker(BASELINE, common_sets(args), torch.get_num_threads())
        for i, seed in enumerate(args.seeds):
            study = study_for(seed, args)
            worker.start_run(seed)
            if i % 2 == 1:
                worker.epoch()

            def plain_turn(epoch: int, metrics: dict[str, float]) -> bool:
                if len(worker.epoch_seconds) < args.epochs:
                    worker.epoch()
                return False

            trainer = Trainer(study, data, on_epoch=plain_turn, epoch_log_level=logging.DEBUG)
            result = trainer.run()
            plain.epoch_seconds.append(worker.epoch_seconds)
            plain.val_acc.append(worker.val_acc)
            engine.epoch_seconds.append([h["epoch_seconds"] for h in result.history])
            engine.val_acc.append(result.final["val_acc"])
            engine.choices = engine_choices(result.engine)
            print(
                f"seed {seed}: plain val_acc {100 * plain.val_acc[-1]:.2f}%, "
                f"engine val_acc {100 * engine.val_acc[-1]:.2f}%",
                file=sys.stderr,
            )
        worker.close()
    return plain, engine, load


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def speed_section(
    plain: LoopRuns,
    engine: LoopRuns,
    n: int,
    macs: int,
    peaks: dict[str, float],
    seeds: list[int],
) -> tuple[str, dict[str, Any]]:
    rows: list[list[str]] = []
    figures: dict[str, Any] = {}
    for runs in (plain, engine):
        overall = runs.images_per_s(n)
        median = statistics.median(runs.epoch_rates(n, True) + runs.epoch_rates(n, False))
        first = statistics.median(runs.epoch_rates(n, first=True))
        gflops = median * macs * TRAIN_FLOPS_PER_MAC / 1e9
        rows.append(
            [
                runs.name,
                runs.choices,
                f"{n * sum(len(s) for s in runs.epoch_seconds):,}",
                f"{median:,.0f}",
                f"{overall:,.0f}",
                f"{first:,.0f}",
                f"{gflops:.1f}",
                f"{100 * gflops / peaks['fp32']:.0f}%",
                f"{100 * gflops / peaks['bf16']:.0f}%",
            ]
        )
        figures[runs.name] = {
            "median_epoch_images_per_s": median,
            "images_per_s": overall,
            "first_epoch_images_per_s": first,
            "gflops": gflops,
        }
    headers = ["loop", "choices", "images", "images/s (median epoch)", "images/s (all)"]
    headers += ["epoch 1 images/s", "GFLOP/s", "of fp32 peak", "of bf16 peak"]
    ratio = engine.images_per_s(n) / plain.images_per_s(n)
    # The loops take turns epoch by epoch: each pair ran within a minute of each other.
    pairs = [
        p / e
        for plain_seed, engine_seed in zip(plain.epoch_seconds, engine.epoch_seconds, strict=True)
        for p, e in zip(plain_seed, engine_seed, strict=True)
    ]
    paired = statistics.median(pairs)
    figures.update(ratio=ratio, paired_ratio=paired, pair_ratios=pairs)
    text = table(headers, rows)
    text += (
        f"\n\nspeed ratio engine / plain: **{paired:.2f}x**, the median over {len(pairs)} pairs "
        f"of epochs trained in turn (range {min(pairs):.2f}-{max(pairs):.2f}); "
        f"{ratio:.2f}x over all epochs together"
    )
    text += "\n\n" + epochs_table(plain, engine, n, seeds)
    figures["epoch_seconds"] = {"plain": plain.epoch_seconds, "engine": engine.epoch_seconds}
    return text, figures


def epochs_table(plain: LoopRuns, engine: LoopRuns, n: int, seeds: list[int]) -> str:
    """Images/s of every epoch, to show warm-up and the drift of the host's speed."""
    rows = []
    for seed, p, e in zip(seeds, plain.epoch_seconds, engine.epoch_seconds, strict=True):
        for runs, seconds in ((plain, p), (engine, e)):
            rates = [f"{n / s:,.0f}" for s in seconds]
            rows.append([str(seed), runs.name, *rates])
    epochs = max(len(s) for s in plain.epoch_seconds)
    return table(["seed", "loop", *(f"epoch {i + 1}" for i in range(epochs))], rows)


def parity_section(plain: LoopRuns, engine: LoopRuns, seeds: list[int]) -> tuple[str, float]:
    rows = []
    for seed, p, e in zip(seeds, plain.val_acc, engine.val_acc, strict=True):
        rows.append([str(seed), f"{100 * p:.2f}", f"{100 * e:.2f}", f"{100 * (e - p):+.2f}"])
    diff = 100 * (statistics.mean(engine.val_acc) - statistics.mean(plain.val_acc))
    rows.append(
        [
            "mean",
            f"{100 * statistics.mean(plain.val_acc):.2f}",
            f"{100 * statistics.mean(engine.val_acc):.2f}",
            f"{diff:+.2f}",
        ]
    )
    headers = ["seed", "plain val_acc %", "engine val_acc %", "engine - plain (points)"]
    return table(headers, rows), diff


def overhead_sections(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    from interplay.tracking import MLflowSink, get_client, get_experiment_id

    figures: dict[str, Any] = {"store_creation_s": store_creation_seconds()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        MLflowSink(uri, "warmup").close()  # the schema is made once per store, not per run
        # A study looks its experiment up once and makes every run in it.
        experiment = get_experiment_id(get_client(uri), "baseline")
        # Once per process, not per run: torch imports its compiler with the first optimizer.
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        cases = [("quick budget (600/class, 2 epochs)", ["data.subset=600", "training.epochs=2"])]
        if not args.quick:
            cases.append(("full data, 2 epochs", ["training.epochs=2"]))
        for label, sets in cases:
            study = load_study(BASELINE, sets).base()
            data = load_data(study.data)
            # The median of several runs: one sqlite write that waits on the disk can take
            # ten times the usual, and about a third of quick runs' closes take half as long
            # again, so a median of 5 still moved by a third between runs.
            repeats = 9 if "quick" in label else 1
            shares = sorted(
                (logging_share(label, study, data, uri, experiment) for _ in range(repeats)),
                key=lambda s: s.share,
            )
            share = shares[len(shares) // 2]
            rows.append(
                [
                    label,
                    f"{share.run_seconds:.1f}",
                    f"{share.logging_seconds:.3f}",
                    f"{100 * share.share:.1f}%"
                    + (
                        f" ({100 * shares[0].share:.1f}-{100 * shares[-1].share:.1f})"
                        if repeats > 1
                        else ""
                    ),
                    str(share.calls),
                    ", ".join(
                        f"{name} {seconds:.3f}"
                        for name, seconds in sorted(
                            share.seconds_by_call.items(), key=lambda item: -item[1]
                        )[:3]
                    ),
                ]
            )
            figures[label] = asdict(share) | {"shares": [s.share for s in shares]}
    headers = ["run", "run s", "MLflow s", "share", "MLflow calls", "largest parts (s)"]
    text = table(headers, rows)
    created = figures["store_creation_s"]
    text += f"\n\nfirst use of a new sqlite store (schema creation): {created:.1f} s"
    startup = cli_startup(repeats=1 if args.quick else 3)
    rows = [[s.command, f"{s.seconds:.2f}", ", ".join(s.heavy) or "-"] for s in startup]
    text += "\n\n" + table(["command", "wall s (median)", "heavy modules imported"], rows)
    figures["startup"] = [asdict(s) for s in startup]
    return text, figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--subset", type=int, default=None, help="Images per class.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads; all cores.")
    parser.add_argument("--skip-overheads", action="store_true")
    parser.add_argument("--quick", action="store_true", help="Subset 300, 2 epochs, 1 seed.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds, args.subset = 2, [0], args.subset or 300
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    data = load_data(study_for(args.seeds[0], args).data)
    n = len(data.train_y)
    model = build_model(study_for(args.seeds[0], args).model, data.input_shape, data.num_classes)
    macs = summary_of(model).total_macs
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    plain, engine, load = compare(args, data)

    speed, figures = speed_section(plain, engine, n, macs, peaks, args.seeds)
    parity, diff = parity_section(plain, engine, args.seeds)
    print("## Machine\n")
    print(table(["", ""], [[k, v] for k, v in machine_lines(threads)]))
    print(
        f"\nmatmul peak (2048 x 2048, {threads} threads): fp32 {peaks['fp32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16']:.0f} GFLOP/s; a training step costs about "
        f"{TRAIN_FLOPS_PER_MAC} x {macs:,} FLOPs per image"
    )
    print(
        f"\n## Speed: {n:,} images per epoch, {args.epochs} epochs x {len(args.seeds)} seeds, "
        f"batch {args.batch_size}\n"
    )
    print(speed)
    print(
        f"\nother processes used {load.others_cores:.2f} cores on average meanwhile "
        f"(load average at the end: {load.loadavg})"
    )
    print(f"\n## Accuracy after {args.epochs} epochs (validation, {len(data.val_y):,} images)\n")
    print(parity)
    figures.update(machine=dict(machine_lines(threads)), peaks=peaks, parity_points=diff)
    figures.update(others_cores=load.others_cores, loadavg=load.loadavg)
    if not args.skip_overheads:
        text, extra = overhead_sections(args)
        print("\n## MLflow logging and CLI start-up\n")
        print(text)
        figures.update(extra)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
