"""Run a module's ``register(stage)`` subcommands as the ``iaa`` command would, in a test."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from iaa.errors import IAAError


def registered_parser(register: Callable) -> argparse.ArgumentParser:
    """A parser holding only the subcommands ``register`` adds (as iaa.cli.build_parser does)."""
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")

    def stage(name, fn, help):  # the signature of iaa.cli's stage()
        sp = sub.add_parser(name, help=help)
        sp.set_defaults(func=fn)
        return sp

    register(stage)
    return p


def run_registered(register: Callable, argv: list[str]) -> None:
    """Parse ``argv`` with a parser holding only ``register``'s subcommands, and run it."""
    args = registered_parser(register).parse_args(argv)
    args.func(args)


def one_line(err: pytest.ExceptionInfo[IAAError]) -> str:
    """The error's text, which must be a single line."""
    text = str(err.value)
    assert "\n" not in text
    return text
