"""Shared CLI plumbing: one error handler, progress bars, the dask scheduler option."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bridge_xr.errors import BridgeXRError

F = TypeVar("F", bound=Callable[..., Any])

#: ``--via``: which registrations to map through when several join the same images.
Via = Annotated[
    str | None,
    typer.Option(
        "--via",
        help="registration names in chain order (NAME[,NAME...]) when several join the images",
    ),
]


# -- closed choices: typer validates them (the library's Literal types, as enums) -------------
class ModelChoice(StrEnum):
    """``bridge_xr.model.pointmaps.ModelName``."""

    rigid = "rigid"
    similarity = "similarity"
    affine = "affine"
    tps = "tps"


class KernelChoice(StrEnum):
    """``bridge_xr.model.pointmaps.Kernel``: r (3D Slicer) or r2logr (BigWarp)."""

    r = "r"
    r2logr = "r2logr"


class MethodChoice(StrEnum):
    """``bridge_xr.extract.footprint.Method``."""

    exact = "exact"
    resliced = "resliced"
    bilinear = "bilinear"


# -- options shared by many commands ----------------------------------------------------------
#: study commands on an ``s3://`` prefix without an archive manifest
Live = Annotated[
    bool,
    typer.Option(
        "--live",
        help="read an s3:// study that has no archive manifest (written in place, not archived)",
    ),
]
StudyArg = Annotated[
    str, typer.Argument(help="study folder of subject stores, or an archived study's s3:// prefix")
]
StoreArg = Annotated[str, typer.Argument(help="subject store")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace what is there")]
Fixed = Annotated[str, typer.Option("--fixed", help="fixed image (e.g. invivo_mri/d060/T2w)")]
Moving = Annotated[
    str, typer.Option("--moving", help="moving image (e.g. twophoton/d060/angiogram)")
]
KernelOpt = Annotated[
    KernelChoice, typer.Option("--kernel", help="TPS kernel: r (3D Slicer) or r2logr (BigWarp)")
]
ModelOpt = Annotated[ModelChoice, typer.Option("--model", help="rigid, similarity, affine or tps")]
MethodOpt = Annotated[
    MethodChoice,
    typer.Option(help="exact (footprint integral), resliced (near-exact, any chain) or bilinear"),
]

console = Console(stderr=True)
out = Console()


#: library messages name Python parameters in backticks; on the command line they are options
_FLAGS = {
    "via": "--via",
    "current=True": "`bridge register --current`",
    "overwrite": "--overwrite",
    "series": "--series",
    "scene": "--scene",
    "pixel_size": "--pixel-size",
    "z_step": "--z-step",
    "days": "--days",
    "where": "--where",
    "metric": "--metric",
    "vessels": "--vessels",
    "tumour": "--tumour",
    "mask": "--mask",
    "output": "--output",
    "dataset_id": "--dataset-id",
    "max_tre_um": "--max-tre",
    "device": "--device",
    "kernel": "--kernel",
    "name": "--name",
}
_PARAM = re.compile(r"`([a-z_]+(?:=True)?)`")


def cli_message(message: str) -> str:
    """A library message with its backticked parameter names as the options that set them.

    Examples
    --------
    >>> cli_message("choose one with `via` or pass `overwrite`")
    'choose one with --via or pass --overwrite'
    """
    return _PARAM.sub(lambda m: _FLAGS.get(m.group(1), m.group(0)), message)


def fail(message: str) -> typer.Exit:
    """Print one clear line to stderr and return the exit (status 2) to raise."""
    from rich.markup import escape

    message = cli_message(message)

    # escaped: messages name things like "[reg_a]" that rich would take for markup tags
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def handle_errors(func: F) -> F:
    """Turn user errors into one line on stderr and exit status 2 (never a traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BridgeXRError as exc:
            raise fail(str(exc)) from None
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            raise fail(f"{exc.strerror or exc}: {exc.filename!r}") from None
        except KeyboardInterrupt:
            console.print("interrupted; nothing half-written was left behind")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _progress(description: str, *columns: Any) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar (on a terminal only) fed by ``callback(done, total)``."""
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        *columns,
        TimeElapsedColumn(),
        console=console,
        transient=not sys.stderr.isatty(),
        disable=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task(description, total=None)

        def callback(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield callback


Feed = contextlib.AbstractContextManager[Callable[[int, int], None]]


def level_progress(description: str, unit: str = "levels") -> Feed:
    """A progress bar counting ``unit`` (a context manager giving ``callback(done, total)``)."""
    return _progress(description, TextColumn("{task.completed}/{task.total} " + unit))


def byte_progress(description: str) -> Feed:
    """A progress bar in bytes, with the transfer speed."""
    from rich.progress import DownloadColumn, TransferSpeedColumn

    return _progress(description, DownloadColumn(), TransferSpeedColumn())


_client: Any = None


def read_points(path: Any) -> Any:
    """A points CSV (``x, y, z`` in µm, other columns kept) as a DataFrame; one line if not."""
    import pandas as pd

    from bridge_xr.errors import InvalidInputError

    if not path.is_file():
        raise InvalidInputError(f"no such points file: {str(path)!r}")
    df = pd.read_csv(path)
    missing = [c for c in ("x", "y", "z") if c not in df.columns]
    if missing:
        raise InvalidInputError(f"{str(path)!r} lacks columns {missing}; points need x,y,z in µm")
    return df


def use_scheduler(address: str | None) -> None:
    """Connect to a dask-distributed scheduler (``tcp://host:port``) for all later work."""
    global _client
    address = address or os.environ.get("BRIDGE_XR_SCHEDULER")
    if not address:
        return
    try:
        from distributed import Client
    except ImportError as exc:
        raise fail(
            "--scheduler needs dask-distributed: pip install 'bridge_xr[distributed]'"
        ) from exc
    try:
        _client = Client(address, timeout="10s")
    except OSError as exc:
        raise fail(f"cannot reach dask scheduler {address!r}: {exc}") from exc
