"""Argument types and formatting of the ``iaa`` command (iaa/cli.py): each numeric option's
domain (:class:`Domain`, ``positive_int``, ...), list options given space- or comma-separated,
JSON mappings, help texts that show each default, the parser whose usage errors are one line,
and the option groups several stages share (``image_args``, ``weight_args``)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, NoReturn


def int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers, got {text!r}") from None


def str_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


class ListAction(argparse.Action):
    """A list option given space-separated (``--recall-k 1 2 4 8``, as other DML tools take
    it), comma-separated (``--recall-k 1,2,4,8``) or both; its ``type`` parses one token into
    a list (``int_list``, ``str_list``), and the lists are joined. Repeating the option
    replaces the earlier list."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs) -> None:
        kwargs.setdefault("nargs", "+")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        items = [item for part in values for item in part]
        if not items:
            raise argparse.ArgumentError(self, "expected at least one value")
        setattr(namespace, self.dest, items)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default appended as ``(default: ...)``, except where its help already
    says it, or there is none to say (a required option, a flag, a None default)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.required
            or action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return super()._get_help_string(action)


def json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


# --------------------------------------------------------------------------- stages


# --------------------------------------------------------------------------- value types
# Every numeric option states its domain in its type, so a value outside it is one line from
# argparse ("iaa train: error: argument --workers: must be a whole number >= 0, not -1", exit
# 2) before any work starts. The same domains check the --settings JSON (iaa.cli_commands).


class Domain(NamedTuple):
    """The values a number may take: ``what`` says it in words ("a whole number >= 0")."""

    what: str
    whole: bool
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    infinite: bool = False  # +inf admitted too (sigma = inf: no noise bound, Table IX)

    def admits(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.whole else (int, float)):
            return False
        if not math.isfinite(value):
            return self.infinite and value == math.inf
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


NONNEGATIVE_INT = Domain("a whole number >= 0", whole=True, low=0)
POSITIVE_INT = Domain("a whole number >= 1", whole=True, low=1)
POSITIVE_FLOAT = Domain("a number > 0", whole=False, low=0, low_open=True)
POSITIVE_OR_INF = Domain("a number > 0, or inf", whole=False, low=0, low_open=True, infinite=True)
NONNEGATIVE_FLOAT = Domain("a number >= 0", whole=False, low=0)
UNIT_INTERVAL = Domain("a number from 0 to 1", whole=False, low=0, high=1)
OPEN_UNIT_INTERVAL = Domain(
    "a number between 0 and 1 (exclusive)", whole=False, low=0, low_open=True, high=1, high_open=True
)
FRACTION = Domain("a number > 0 and <= 1", whole=False, low=0, low_open=True, high=1)
AT_LEAST_ONE = Domain("a number >= 1", whole=False, low=1)


def _shown(text: str) -> str:
    return text if text and text == text.strip() else repr(text)


def _number(text: str, domain: Domain) -> int | float:
    try:
        value: int | float = int(text) if domain.whole else float(text)
    except ValueError:
        value = math.nan
    if not domain.admits(value):
        raise argparse.ArgumentTypeError(f"must be {domain.what}, not {_shown(text)}")
    return value


def nonnegative_int(text: str) -> int:
    """A count that may be 0 (worker processes, seeds)."""
    return int(_number(text, NONNEGATIVE_INT))


def positive_int(text: str) -> int:
    """A count of at least 1 (threads, neighbours, pixels, restarts)."""
    return int(_number(text, POSITIVE_INT))


def positive_float(text: str) -> float:
    return float(_number(text, POSITIVE_FLOAT))


def nonnegative_float(text: str) -> float:
    return float(_number(text, NONNEGATIVE_FLOAT))


def unit_interval(text: str) -> float:
    """A weight or probability in [0, 1]."""
    return float(_number(text, UNIT_INTERVAL))


def open_unit_interval(text: str) -> float:
    """A fraction strictly between 0 and 1 (a share of the classes)."""
    return float(_number(text, OPEN_UNIT_INTERVAL))


def at_least_one(text: str) -> float:
    """A number of at least 1 (the order p of a p-norm)."""
    return float(_number(text, AT_LEAST_ONE))


def positive_int_list(text: str) -> list[int]:
    """A list option's token (``int_list``) whose every number is at least 1 (the K of Recall@K)."""
    values = int_list(text)
    if not all(POSITIVE_INT.admits(v) for v in values):
        raise argparse.ArgumentTypeError(f"must be whole numbers >= 1, not {_shown(text)}")
    return values


def positive_float_list(text: str) -> list[float]:
    """A list option's token (comma-separated numbers) whose every number is > 0 (Fig. 9a's betas)."""
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers, got {text!r}") from None
    if not all(POSITIVE_FLOAT.admits(v) for v in values):
        raise argparse.ArgumentTypeError(f"must be numbers > 0, not {_shown(text)}")
    return values


def flag01(text: str) -> bool:
    """A switch given as 0 or 1, as the workflow passes it (``--compile {resources.iaa_compile}``)."""
    if text.strip() not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"must be 0 or 1, not {_shown(text)}")
    return text.strip() == "1"


# --------------------------------------------------------------------------- parser


class Parser(argparse.ArgumentParser):
    """A usage error is one line, ``iaa train: error: argument --workers: must be ...``, exit
    status 2, as every other error the user can fix; ``iaa STAGE --help`` shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# --------------------------------------------------------------------------- option groups


def image_args(sp: argparse.ArgumentParser) -> None:
    """The image options of the stages that read images (extract, export)."""
    sp.add_argument("--image-size", type=positive_int, default=224, help="side of the center crop, in pixels")
    sp.add_argument(
        "--resize", type=positive_int, default=None,
        help="resize to this square (the shorter side, with --no-square-resize) before the center "
        "crop, in pixels (default: --image-size)",
    )  # fmt: skip
    sp.add_argument(
        "--square-resize", action=argparse.BooleanOptionalAction, default=True,
        help="squash images to --resize squared before the center crop (SPEC 3; off on CUB)",
    )  # fmt: skip
    sp.add_argument(
        "--interpolation", choices=["bilinear", "lanczos"], default="bilinear", help="resize filter"
    )
    sp.add_argument(
        "--workers",
        type=nonnegative_int,
        default=0,
        help="DataLoader worker processes (0: load in the main process)",
    )


def weight_args(sp: argparse.ArgumentParser) -> None:
    """Where the ImageNet weights come from (extract, train)."""
    sp.add_argument(
        "--weights", type=Path, default=None,
        help="ImageNet weights file, or a folder holding it (default: $TORCH_HOME/hub/checkpoints)",
    )  # fmt: skip
    sp.add_argument("--no-download", action="store_true", help="never fetch missing weights")
