"""Argument types and formatting of the ``iaa`` command (iaa/cli.py): list options given
space- or comma-separated, JSON mappings, and help texts that show each default."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence


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
