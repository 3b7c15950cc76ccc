"""Preemption: a training job stopped by the scheduler resumes where its checkpoints left off.

Batch schedulers stop a job with SIGTERM and, after a grace period (SLURM's KillWait, 30 s
by default), SIGKILL. Nothing needs saving on SIGTERM: ``train`` checkpoints every epoch,
each checkpoint is written under a temporary name and renamed into place when complete
(:func:`iaa.atomic.atomic_path`), and resuming restores every random number generator, so a
rerun after a kill at any point redoes at most the epoch in progress and ends bit-identical
to an uninterrupted run (``tests/test_preemption.py``).

What SIGTERM handling adds is a tidy exit instead of Python's default instant death: the
stack unwinds (so a checkpoint being written removes its temporary file), one log line says
which checkpoint a rerun resumes from, and the process then dies of SIGTERM as it would
have without the handler (exit status 143 in a shell, -15 from :mod:`subprocess`), so a
scheduler or Snakemake sees a terminated job, not a failure of its own. SIGKILL cannot be
caught; the temporary file it may leave is ignored (it never matches ``epoch_*.pt``) and
removed by :func:`remove_stale_temporaries` when the run restarts.

Every other stage resumes nothing but may write a temporary folder or file beside its output:
:func:`iaa.cli.main` runs each under :func:`clean_up_on_sigterm` (train's own handler, inside,
wins). SIGTERM unwinds them like Ctrl-C, so their temporaries are removed; what a SIGKILL
leaves is removed by the next run writing the same output (:func:`iaa.atomic.remove_leftovers`;
``decode``'s store and ``prepare``'s resized cache call it).

The checkpoint directory is deliberately not a declared Snakemake output (the ``train``
rule passes it as a parameter): Snakemake deletes a failed job's outputs, and the
checkpoints must survive for the rerun to resume.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class Preempted(BaseException):
    """Raised by SIGTERM in the training process.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way up
    swallows it while ``finally`` blocks and atomic writes still clean up.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"received {signal.Signals(signum).name}")


def list_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """``epoch_<N>.pt`` files, oldest first, by epoch number (a name sort puts 1000 before 999)."""

    def epoch(path: Path) -> int:
        digits = path.stem.removeprefix("epoch_")
        return int(digits) if digits.isdigit() else -1

    return sorted((p for p in Path(checkpoint_dir).glob("epoch_*.pt") if epoch(p) >= 0), key=epoch)


def newest_checkpoint(checkpoint_dir: Path | None) -> Path | None:
    """The checkpoint a rerun would start from (``epoch_NNN.pt``, see iaa.train), if any."""
    if checkpoint_dir is None:
        return None
    found = list_checkpoints(Path(checkpoint_dir))
    return found[-1] if found else None


def remove_stale_temporaries(checkpoint_dir: Path, *outputs: Path) -> list[Path]:
    """Delete temporary files a killed run left behind; return them.

    :func:`iaa.atomic.atomic_path` writes ``path`` as ``.<name>.<random>.tmp`` beside it; one
    that still exists when a run starts belongs to a write that was killed (one run owns its
    checkpoint directory and outputs, so no live writer is affected).
    """
    stale = list(Path(checkpoint_dir).glob(".epoch_*.pt.*.tmp"))
    for out in map(Path, outputs):
        stale += out.parent.glob(f".{out.name}.*.tmp")
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("removed %s, left by an interrupted write", path)
    return stale


def exit_cleanly_on_sigterm(func: F) -> F:
    """Decorate a stage so that SIGTERM stops it tidily (see the module docstring).

    The handler is installed only while ``func`` runs in the main thread of the process
    that called it; the previous handler is restored afterwards. A keyword argument
    ``checkpoint_dir``, if given, names where the log line looks for the newest checkpoint.
    """

    def farewell(stop: Preempted, kwargs: dict[str, Any]) -> None:
        newest = newest_checkpoint(kwargs.get("checkpoint_dir"))
        where = f"from {newest}" if newest is not None else "from the start (no checkpoint yet)"
        log.warning("%s: training stopped; running the same command again resumes %s", stop, where)

    return _stop_on_sigterm(func, farewell)


def clean_up_on_sigterm(stage: str) -> Callable[[F], F]:
    """Decorate a stage that resumes nothing (``decode``, building the resized cache) so that
    SIGTERM unwinds it like Ctrl-C: its ``finally``/``except BaseException`` blocks remove the
    temporary file or folder it was writing, one line says so, and the process dies of the
    signal (as :func:`exit_cleanly_on_sigterm`). ``stage`` names it in that line.
    """

    def farewell(stop: Preempted, kwargs: dict[str, Any]) -> None:
        log.warning(
            "%s: %s stopped; its temporary files are removed, its outputs not written (files it "
            "finished on the way, e.g. generated images, stay); running the same command again "
            "starts it over",
            stop,
            stage,
        )

    return lambda func: _stop_on_sigterm(func, farewell)


def _stop_on_sigterm(func: F, farewell: Callable[[Preempted, dict[str, Any]], None]) -> F:
    """``func`` with SIGTERM raised as :class:`Preempted` in the main thread while it runs;
    ``farewell(stop, kwargs)`` logs once the stack has unwound, then the process dies of it.
    Nested (a decorated stage calling another): the outer handler is restored on return."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return func(*args, **kwargs)
        owner = os.getpid()
        stopping = False

        def handler(signum: int, frame: Any) -> None:
            nonlocal stopping
            if os.getpid() != owner:  # a forked child (a data-loading worker): the default
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            if not stopping:  # a second SIGTERM must not interrupt the clean-up of the first
                stopping = True
                raise Preempted(signum)

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            return func(*args, **kwargs)
        except Preempted as stop:
            farewell(stop, kwargs)
            for handler_ in logging.getLogger().handlers:
                handler_.flush()
            signal.signal(stop.signum, signal.SIG_DFL)
            os.kill(os.getpid(), stop.signum)  # die of the signal, as without the handler
            raise  # only reached if the signal is blocked
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]
