import pytest

from iaa.runs import parse_run, run_name, table_rows


def test_run_names_round_trip_and_map_to_table_rows():
    assert run_name("ms", "iaa", 2) == "ms-iaa-seed2"
    assert parse_run("ms-iaa-seed2").row == "MS+IAA"
    assert parse_run("contrastive-baseline-seed0").row == "Contrastive"
    assert parse_run("pretrained").row == "Pretrained"
    with pytest.raises(ValueError):
        parse_run("ms-iaa")


def test_rows_follow_table_iii_order():
    assert table_rows(["contrastive", "triplet", "ms"]) == [
        "Pretrained", "Contrastive", "Contrastive+IAA", "Triplet", "Triplet+IAA", "MS", "MS+IAA",
    ]  # fmt: skip
