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


# --------------------------------------------------------------------------- value types

from iaa.cli_args import (  # noqa: E402
    at_least_one,
    flag01,
    int_list,
    nonnegative_float,
    nonnegative_int,
    open_unit_interval,
    positive_float,
    positive_float_list,
    positive_int,
    positive_int_list,
    unit_interval,
)


@pytest.mark.parametrize(
    "kind, text, value",
    [
        (nonnegative_int, "0", 0), (nonnegative_int, "7", 7),
        (positive_int, "1", 1), (positive_int, " 12", 12),
        (positive_float, "1e-4", 1e-4), (positive_float, "3", 3.0),
        (nonnegative_float, "0", 0.0), (nonnegative_float, "0.5", 0.5),
        (unit_interval, "0", 0.0), (unit_interval, "1", 1.0), (unit_interval, "0.2", 0.2),
        (open_unit_interval, "0.01", 0.01), (open_unit_interval, "0.99", 0.99),
        (positive_int_list, "1,2,4", [1, 2, 4]), (flag01, "0", False), (flag01, "1", True),
        (at_least_one, "1", 1.0), (at_least_one, "2.5", 2.5), (positive_float_list, "0.05,1", [0.05, 1.0]),
    ],
)  # fmt: skip
def test_value_types_take_their_domain(kind, text, value):
    assert kind(text) == value and type(kind(text)) is type(value)


@pytest.mark.parametrize(
    "kind, text, says",
    [
        (nonnegative_int, "-1", "must be a whole number >= 0, not -1"),
        (nonnegative_int, "1.5", "whole number >= 0"), (nonnegative_int, "", "not ''"),
        (positive_int, "0", "must be a whole number >= 1, not 0"), (positive_int, "x", "not x"),
        (positive_float, "0", "must be a number > 0, not 0"), (positive_float, "-1e-4", "> 0"),
        (positive_float, "inf", "> 0"), (positive_float, "nan", "> 0"),
        (nonnegative_float, "-0.1", "must be a number >= 0, not -0.1"),
        (unit_interval, "1.01", "from 0 to 1"), (unit_interval, "-0", None),
        (unit_interval, "-0.1", "0 to 1"),
        (open_unit_interval, "0", "between 0 and 1 (exclusive)"), (open_unit_interval, "1", "(exclusive)"),
        (positive_int_list, "1,0", "whole numbers >= 1"), (positive_int_list, "x", "integers"),
        (flag01, "2", "must be 0 or 1, not 2"), (flag01, "True", "0 or 1"), (flag01, "-1", "0 or 1"),
        (at_least_one, "0.5", "must be a number >= 1, not 0.5"), (at_least_one, "inf", ">= 1"),
        (positive_float_list, "0.1,0", "must be numbers > 0"), (positive_float_list, "x", "numbers"),
    ],
)  # fmt: skip
def test_value_types_refuse_the_rest(kind, text, says):
    if says is None:  # -0 is 0: in the domain
        assert kind(text) == 0
        return
    with pytest.raises(argparse.ArgumentTypeError, match=".*".join(map(_escape, says.split()))):
        kind(text)


def _escape(word: str) -> str:
    import re

    return re.escape(word)


CORE_STAGES = {"prepare", "pretrain", "extract", "train", "export", "index", "search", "evaluate"}
CORE_STAGES |= {"stats", "report", "compare"}
# Added by the modules of iaa.cli.COMMAND_MODULES through their register(stage).
REGISTERED_STAGES = {"ablation-table", "sweep-figure", "class-figures", "visualize", "similarity-histogram"}
REGISTERED_STAGES |= {"tsne", "decode"}


def test_no_option_takes_a_bare_int_or_float():
    """Every numeric option of every subcommand, iaa/cli.py's and those other modules register,
    states its domain in its type."""
    parser = build_parser()
    subs = _subparsers(parser)
    assert set(subs) >= CORE_STAGES | REGISTERED_STAGES, sorted(subs)
    for name, sp in [("iaa", parser), *sorted(subs.items())]:
        for action in sp._actions:
            where = f"{name} {action.option_strings or action.dest}"
            assert action.type not in (int, float, int_list), f"{where}: give it a domain type"
            assert getattr(action.type, "__name__", "") != "<lambda>", where


TRAIN = ["train", "--loss", "ms", "--method", "iaa", "--out", "m.pt", "--history", "h.csv"]
TSNE = ["tsne", "e.parquet", "--out", "t.png", "--csv", "t.csv"]
HISTOGRAM = ["similarity-histogram", "--baseline", "b.parquet", "--iaa", "i.parquet", "--out", "h.png"]
HISTOGRAM += ["--csv", "h.csv"]


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--threads", "0", "index", "e.parquet", "--split", "test", "--out", "i.faiss"], "--threads"),
        ([*TRAIN, "--workers", "-1"], "--workers"),
        ([*TRAIN, "--compile", "2"], "--compile"),
        ([*TRAIN, "--seed", "-3"], "--seed"),
        (["extract", "--manifest", "m.parquet", "--out", "f.parquet", "--image-size", "0"], "--image-size"),
        (["export", "--model", "m.pt", "--out", "e.parquet", "--resize", "-256"], "--resize"),
        (["search", "i.faiss", "--query", "q.parquet", "--out", "n.parquet", "--k", "0"], "--k"),
        (["evaluate", "e.parquet", "--out", "m.json", "--nmi-redo", "0"], "--nmi-redo"),
        (["evaluate", "e.parquet", "--out", "m.json", "--recall-k", "0", "1"], "--recall-k"),
        (["stats", "e.parquet", "--out", "s.parquet", "--gamma", "1.5"], "--gamma"),
        (["stats", "e.parquet", "--out", "s.parquet", "--tau", "-1"], "--tau"),
        (["prepare", "folder", "--out", "m.parquet", "--test-fraction", "0"], "--test-fraction"),
        (["prepare", "synth", "--out", "m.parquet", "--cache-size", "0"], "--cache-size"),
        (["pretrain", "--manifest", "m.parquet", "--out", "b.pt", "--seed", "-1"], "--seed"),
        # the subcommands other modules register
        ([*TSNE, "--perplexity", "0"], "--perplexity"),
        ([*TSNE, "--copies", "0"], "--copies"),
        ([*TSNE, "--lam", "-0.5"], "--lam"),
        ([*TSNE, "--classes", "0"], "--classes"),
        (["visualize", "e.parquet", "--out", "g.png", "--top", "0"], "--top"),
        (["visualize", "e.parquet", "--out", "g.png", "--seed", "-1"], "--seed"),
        ([*HISTOGRAM, "--bins", "0"], "--bins"),
        ([*HISTOGRAM, "--max-pairs", "-5"], "--max-pairs"),
        (["class-figures", "--p", "0.5"], "--p"),
        (["class-figures", "--betas", "0.1", "0"], "--betas"),
        (["class-figures", "--tau", "-1"], "--tau"),
        (["class-figures", "--n-max", "0"], "--n-max"),
        (["class-figures", "--min-count", "0"], "--min-count"),
        (["decode", "--manifest", "m.parquet", "--out", "s", "--resize", "0"], "--resize"),
        (["decode", "--manifest", "m.parquet", "--out", "s", "--decode-threads", "-1"], "--decode-threads"),
    ],
)  # fmt: skip
def test_a_value_outside_its_domain_is_one_line_naming_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as info:
        _parse(*argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "usage" not in err, err
    assert err.startswith("iaa") and f"error: argument {option}: must be" in err, err


def test_what_the_workflow_passes_still_parses():
    base = ["train", "--loss", "ms", "--method", "iaa", "--out", "m.pt", "--history", "h.csv"]
    for compile_, want in (("0", False), ("1", True)):
        a = _parse("--threads", "1", *base, "--workers", "0", "--loader", "auto", "--compile", compile_)
        assert a.compile is want and a.workers == 0 and a.threads == 1
    assert _parse(*base).compile is None and _parse(*base).workers is None
    s = _parse(
        "stats", "e.parquet", "--out", "s.parquet", "--k", "25", "--beta", "0", "--gamma", "1", "--tau", "0"
    )
    assert (s.k, s.beta, s.gamma, s.tau) == (25, 0.0, 1.0, 0.0)
    p = _parse("prepare", "folder", "--out", "m.parquet", "--seed", "3", "--test-fraction", "0.5")
    assert (p.seed, p.test_fraction) == (3, 0.5)
    # workflow/rules/ablations.smk and prepare.smk (decode), with the config's values
    t = _parse(*TSNE, "--split", "train", "--copies", "3", "--lam", "0")
    assert (t.copies, t.lam, t.perplexity, t.seed) == (3, 0.0, 30, 0)
    c = _parse("class-figures", "--betas", "0.05", "0.1", "0.2", "0.5", "1.0", "--tau", "40.0", "--p", "1")
    assert (c.betas, c.tau, c.p) == ([0.05, 0.1, 0.2, 0.5, 1.0], 40.0, 1.0)
    d = _parse("--threads", "4", "decode", "--manifest", "m.parquet", "--out", "s", "--resize", "256")
    assert (d.resize, d.decode_threads) == (256, None)
    assert (
        _parse("decode", "--manifest", "m.parquet", "--out", "s", "--decode-threads", "0").decode_threads == 0
    )


# --------------------------------------------------------------------------- --settings domains


def _schema_domain(prop: dict, definitions: dict):
    if "$ref" in prop:
        prop = definitions[prop["$ref"].rsplit("/", 1)[1]]
    return prop


def test_settings_domains_agree_with_the_workflow_schema():
    """Each numeric or boolean key of the train, train.iaa and pretrain sections has the domain
    the schema gives it (samples_per_class(_large)'s minimum of 2 is check_train_settings')."""
    from pathlib import Path

    import yaml

    from iaa.cli_commands import settings_domains

    root = Path(__file__).resolve().parents[1]
    schema = yaml.safe_load((root / "workflow" / "schemas" / "config.schema.yaml").read_text())
    defs = schema["definitions"]
    for section, props in (
        ("train", defs["train"]["properties"]),
        ("train.iaa", defs["iaa"]["properties"]),
        ("pretrain", defs["pretrain"]["properties"]),
    ):
        domains = settings_domains(section)
        for key, prop in props.items():
            prop = _schema_domain(prop, defs)
            types = prop.get("type")
            types = [types] if isinstance(types, str) else types or []
            inner = prop.get("items") or prop.get("additionalProperties")
            if isinstance(inner, dict) and ("integer" in str(_schema_domain(inner, defs))):
                types = types + ["integer"]
            if not {"integer", "number", "boolean"} & set(types) and not (
                isinstance(inner, dict) and {"type"} & set(_schema_domain(inner, defs))
            ):
                assert key not in domains, f"{section}.{key}"
                continue
            assert key in domains, f"{section}.{key}: the schema constrains it, --settings does not"
            domain = domains[key]
            if prop.get("type") == "boolean":
                assert domain is bool, f"{section}.{key}"
                continue
            if isinstance(domain, (list, dict)):
                (domain,) = domain if isinstance(domain, list) else domain.values()
                prop = _schema_domain(inner, defs)
            whole = prop.get("type") == "integer" or "integer" in (prop.get("type") or [])
            assert domain.whole == whole, f"{section}.{key}"
            low = prop.get("minimum", prop.get("exclusiveMinimum"))
            if key in ("samples_per_class", "samples_per_class_large"):
                assert (domain.low, low) == (1, 2)
                continue
            assert (domain.low, domain.low_open) == (low, "exclusiveMinimum" in prop), f"{section}.{key}"
            high = prop.get("maximum", prop.get("exclusiveMaximum"))
            assert (domain.high, domain.high_open) == (high, "exclusiveMaximum" in prop), f"{section}.{key}"
