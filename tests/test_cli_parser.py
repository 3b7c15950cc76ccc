"""The ``iaa`` parser: list options space- or comma-separated, and every option explained."""

import argparse

import pytest

from iaa.cli import build_parser


def _parse(*argv):
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("values", [["1", "2", "4", "8"], ["1,2,4,8"], ["1,2", "4", "8"], ["1,", "2,4,8"]])
def test_recall_k_space_or_comma_separated(values):
    a = _parse("evaluate", "e.parquet", "--out", "m.json", "--recall-k", *values)
    assert a.recall_k == [1, 2, 4, 8] and str(a.embeddings) == "e.parquet"
    r = _parse("report", "--benchmark", "cub", "--metrics", "a.json", "b.json", "--recall-k", *values,
               "--table-md", "t.md", "--table-csv", "t.csv", "--curves", "c.png")  # fmt: skip
    assert r.recall_k == [1, 2, 4, 8] and [str(p) for p in r.metrics] == ["a.json", "b.json"]


def test_list_defaults_and_losses():
    base = ["report", "--benchmark", "cub", "--metrics", "a.json", "--table-md", "t.md"]
    base += ["--table-csv", "t.csv", "--curves", "c.png"]
    a = _parse(*base)
    assert a.recall_k == [1, 2, 4, 8] and a.losses == ["contrastive", "triplet", "ms"]
    assert a.histories == [] and a.correlations == []
    assert _parse(*base, "--losses", "ms", "triplet").losses == ["ms", "triplet"]
    assert _parse(*base, "--losses", "ms,triplet").losses == ["ms", "triplet"]
    a = _parse(*base, "--histories", "h1.csv", "h2.csv", "--correlations", "c1.json", "c2.json")
    assert [str(p) for p in a.histories] == ["h1.csv", "h2.csv"]
    assert [str(p) for p in a.correlations] == ["c1.json", "c2.json"]
    assert _parse("evaluate", "e.parquet", "--out", "m.json").recall_k == [1, 2, 4, 8]


@pytest.mark.parametrize("bad", [["x"], [","], []])
def test_bad_recall_k_is_a_usage_error(bad, capsys):
    with pytest.raises(SystemExit) as info:
        _parse("evaluate", "e.parquet", "--out", "m.json", "--recall-k", *bad)
    assert info.value.code == 2


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_option_has_help():
    parser = build_parser()
    subs = _subparsers(parser)
    assert len(subs) >= 10
    for name, sp in [("iaa", parser), *subs.items()]:
        for action in sp._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}"


def test_help_shows_defaults_and_no_rst(capsys):
    parser = build_parser()
    assert "``" not in parser.format_help()
    for name, sp in _subparsers(parser).items():
        text = sp.format_help()
        assert "``" not in text, name
    evaluate = _subparsers(parser)["evaluate"].format_help()
    assert "(default: [1, 2, 4, 8])" in evaluate and "(default: flat)" in evaluate
    assert "(default: None)" not in evaluate
