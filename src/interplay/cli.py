"""The `interplay` command: parse, configure logging, dispatch. No work happens here.

Heavy libraries (torch, mlflow, optuna) are imported inside the commands that need them, so
`interplay --help` and `interplay summary` start fast.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from interplay.errors import Terminated, UserError, causes, stop_on_sigterm

logger = logging.getLogger(__name__)
console = Console(stderr=True)
out = Console()

app = typer.Typer(
    name="interplay",
    help="Study how hyperparameters and architecture of image classifiers interact.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

StudyArg = Annotated[Path, typer.Argument(help="The study file (YAML).", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a setting: dotted.key=value (repeatable)."),
]
BudgetOpt = Annotated[
    str | None, typer.Option("--budget", help="A preset from the study's budgets (quick, full).")
]
UriOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow store; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db.",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="Results folder of the study; default results/<study>."),
]


@app.callback()
def configure(
    ctx: typer.Context,
    verbose: Annotated[
        int, typer.Option("-v", "--verbose", count=True, help="More log lines.")
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("-q", "--quiet", help="Only warnings and errors.")
    ] = False,
) -> None:
    """interplay: from one study file to MLflow runs, interaction statistics and an A4 report."""
    from rich.logging import RichHandler

    # MLflow configures its own logger on import; this keeps its INFO lines off the console.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if verbose > 1 else "WARNING")
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
    logging.basicConfig(
        level=logging.WARNING, handlers=[handler], format="%(message)s", force=True
    )
    logging.getLogger("interplay").setLevel(level)
    for noisy in ("alembic", "mlflow", "optuna"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)
    ctx.obj = {"quiet": quiet}
    from interplay.errors import ENGINE_ENV, engine_env

    for name in ENGINE_ENV:
        engine_env(name)  # a bad value stops here, before any training


def _quiet(ctx: typer.Context, here: bool = False) -> bool:
    obj: dict[str, Any] = ctx.find_root().obj or {}
    if here:
        logging.getLogger("interplay").setLevel(logging.WARNING)
    return here or bool(obj.get("quiet"))


QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars or per-epoch lines.")]


@app.command()
def data(
    fetch: Annotated[
        list[str] | None,
        typer.Option("--fetch", help="Make sure a dataset is present, downloading it if needed."),
    ] = None,
) -> None:
    """List the datasets and where each was found."""
    from rich.table import Table

    from interplay import data as datasets

    for name in fetch or []:
        where = datasets.fetch(name)
        console.print(f"{name}: ready in {where}", markup=False)
    table = Table("dataset", "found", "where", "train", "test")
    notes = []
    for info in datasets.describe():
        table.add_row(
            info.name,
            "yes" if info.found else "no",
            str(info.location or "-"),
            str(info.train_size or "-"),
            str(info.test_size or "-"),
        )
        if info.detail:
            notes.append(f"{info.name}: {info.detail}")
    out.print(table)
    for note in notes:
        out.print(note, highlight=False)


@app.command()
def summary(study: StudyArg, sets: SetOpt = None, budget: BudgetOpt = None) -> None:
    """Check a study's architecture and print layers, output shapes, params and MACs."""
    from interplay.summary import summarize_study

    summarize_study(study, sets or [], budget, out)


@app.command()
def train(
    ctx: typer.Context,
    study: StudyArg,
    sets: SetOpt = None,
    budget: BudgetOpt = None,
    uri: UriOpt = None,
    test: Annotated[
        bool, typer.Option("--test", help="Also evaluate the held-out test set once.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train one run of the study (params at their first level) and log it to MLflow."""
    from interplay.single import train_single

    train_single(
        study, sets or [], budget, uri, test=test, quiet=_quiet(ctx, quiet), console=console
    )


@app.command()
def run(
    ctx: typer.Context,
    study: StudyArg,
    sets: SetOpt = None,
    budget: BudgetOpt = None,
    out_dir: OutOpt = None,
    uri: UriOpt = None,
    workers: Annotated[int, typer.Option("--workers", help="Local worker processes.")] = 1,
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna storage URL (a database server).")
    ] = None,
    new: Annotated[
        bool, typer.Option("--new", help="Start a fresh study; the old folder is kept aside.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run every trial of a study (resumes where it stopped)."""
    from interplay.runner import run_study

    run_study(
        study,
        sets or [],
        budget=budget,
        out=out_dir,
        storage=storage,
        tracking=uri,
        workers=workers,
        new=new,
        quiet=_quiet(ctx, quiet),
        console=console,
    )


@app.command()
def status(
    study: StudyArg,
    sets: SetOpt = None,
    budget: BudgetOpt = None,
    out_dir: OutOpt = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL.")] = None,
) -> None:
    """Show the trials of a study: params, seeds done, mean and sd of val_acc, state."""
    from interplay.results import status_table
    from interplay.study import results_dir
    from interplay.studyfile import load_study

    paths = results_dir(load_study(study, sets or [], budget), out_dir)
    out.print(status_table(paths, storage))


@app.command()
def export(
    study: StudyArg,
    csv: Annotated[Path, typer.Option("--csv", help="The CSV file to write.")],
    sets: SetOpt = None,
    budget: BudgetOpt = None,
    out_dir: OutOpt = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL.")] = None,
) -> None:
    """Write one row per run: params, seed, state, final and per-epoch metrics."""
    from interplay.results import export_csv
    from interplay.study import results_dir
    from interplay.studyfile import load_study

    paths = results_dir(load_study(study, sets or [], budget), out_dir)
    rows = export_csv(paths, csv, storage)
    console.print(f"{rows} runs written to {csv}", markup=False)


@app.command()
def analyze(
    study: StudyArg,
    sets: SetOpt = None,
    budget: BudgetOpt = None,
    out_dir: OutOpt = None,
    metric: Annotated[
        str | None, typer.Option("--metric", help="val_acc (default) or val_loss.")
    ] = None,
    epoch: Annotated[
        str | None,
        typer.Option("--epoch", help="Compare at this epoch, or 'common' (last one all reached)."),
    ] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level.")] = 0.05,
    min_effect: Annotated[
        float | None,
        typer.Option(
            "--min-effect",
            help="Smallest effect that matters, in the metric's unit (1 point for accuracy); "
            "a claim whose effect's 95% interval lies below it is not supported.",
        ),
    ] = None,
) -> None:
    """Measure effects and pairwise interactions with their uncertainty; draw the figures."""
    from interplay.errors import ConfigError
    from interplay.postprocess import analyze_study, open_study

    if epoch is not None and epoch != "common" and not epoch.isdigit():
        raise ConfigError(f"--epoch {epoch}: give an epoch number or 'common'")
    if metric is not None and metric not in ("val_acc", "val_loss"):
        raise ConfigError(f"--metric {metric}: use val_acc or val_loss")
    if not 0 < alpha < 0.5:
        raise ConfigError(f"--alpha {alpha}: give a significance level between 0 and 0.5")
    if min_effect is not None and not (0 < min_effect < math.inf):
        raise ConfigError(f"--min-effect {min_effect}: give a positive size, e.g. 0.5")
    study_file, paths = open_study(study, sets or [], budget, out_dir)
    chosen = int(epoch) if epoch is not None and epoch.isdigit() else epoch
    analyze_study(
        study_file, paths, metric=metric, epoch=chosen, alpha=alpha, min_effect=min_effect
    )


@app.command()
def report(
    study: StudyArg,
    sets: SetOpt = None,
    budget: BudgetOpt = None,
    out_dir: OutOpt = None,
    test: Annotated[
        bool,
        typer.Option("--test/--no-test", help="Evaluate the best configuration on the test set."),
    ] = True,
) -> None:
    """Write the one-page A4 report (report.pdf and report.md) of an analyzed study."""
    from interplay.postprocess import open_study, report_study
    from interplay.results import mlflow_info

    study_file, paths = open_study(study, sets or [], budget, out_dir)
    files = report_study(study_file, paths, test=test)
    console.print(f"report: {files.pdf} (one A4 page) and {files.md}", markup=False)
    store = mlflow_info(paths).get("tracking_uri")
    if store:
        console.print(f"MLflow store: {store} (in the study parent run)", markup=False)


@app.command()
def ui(
    uri: UriOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind; keep 127.0.0.1.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the dashboard.")] = 5000,
) -> None:
    """Open the MLflow dashboard for the store (bound to 127.0.0.1 unless asked)."""
    import socket

    from interplay.errors import ConfigError
    from interplay.tracking import tracking_uri

    store = tracking_uri(uri)
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("the dashboard will be reachable from other machines on %s", host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigError(f"--port {port}: cannot listen on {host} ({err.strerror})") from None
    console.print(
        f"MLflow dashboard for {store} at http://{host}:{port} (Ctrl-C to stop)", markup=False
    )
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store]
    cmd += ["--host", host, "--port", str(port), "--workers", "1"]
    # Replace this process, so that Ctrl-C and kill reach the dashboard itself.
    os.execv(sys.executable, cmd)


def _os_error_message(err: OSError) -> str | None:
    where = f" {err.filename}" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"the disk is full{where}: free space or choose another folder with --out"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where}: choose a writable path (--out, --csv) or fix its permissions"
    if err.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENOENT):
        return f"cannot use{where}: {err.strerror}; choose another path"
    return None


def _interrupted(err: KeyboardInterrupt) -> None:
    # 128 + the signal's number, as a shell reports a process the signal ended.
    signal_name, code = ("SIGTERM", 143) if isinstance(err, Terminated) else ("Ctrl-C", 130)
    console.print(f"interrupted ({signal_name}); results written so far are kept")
    sys.exit(code)


def main() -> None:
    """Entry point: user errors end in one message and exit code 2, never a traceback."""
    stop_on_sigterm()
    try:
        try:
            # Typer itself turns usage errors (unknown flag, bad value) into exit code 2.
            app()
        finally:
            # Past the command, a SIGTERM ends the process as usual (not in atexit hooks).
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except UserError as err:
        # Messages quote settings like `params: [a, b]`; escaped, Rich prints them as written.
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt as err:
        _interrupted(err)
    except SystemExit as done:
        # Typer turns an interrupt inside a command into a bare exit 130.
        interrupt = next((e for e in causes(done) if isinstance(e, KeyboardInterrupt)), None)
        if interrupt is None:
            raise
        _interrupted(interrupt)
    except OSError as err:
        message = _os_error_message(err)
        if message is None:
            raise
        console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
