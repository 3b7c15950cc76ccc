"""The schema is the pipeline's source of defaults; the stage dataclasses must agree with it."""

from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from iaa.config import PretrainSettings, TrainSettings, from_dict, parse_settings, to_dict
from iaa.errors import IAAError
from iaa.recipes import layered_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")


def filled(config: dict) -> dict:
    validate(config, SCHEMA)
    return config


def test_schema_defaults_equal_dataclass_defaults():
    config = filled({})
    # recipe is a provenance label the workflow adds from the top-level key
    assert config["train"] == {k: v for k, v in to_dict(TrainSettings()).items() if k != "recipe"}
    assert config["pretrain"] == to_dict(PretrainSettings())


def test_default_config_file_is_valid_and_round_trips_into_settings():
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    budget = yaml.safe_load((ROOT / "config" / "synth.yaml").read_text())
    config = filled(layered_config(raw, "synth", budget))
    settings = from_dict(TrainSettings, config["train"])
    assert settings.mode == "finetune" and settings.iaa.start_epoch == 6 and settings.epochs == 12
    assert {k: v for k, v in to_dict(settings).items() if k != "recipe"} == config["train"]


@pytest.mark.parametrize(
    "config, key",
    [
        ({"train": {"epochz": 3}}, "epochz"),
        ({"train": {"iaa": {"lamda": 0.5}}}, "lamda"),
        ({"losses": ["contrastive", "arcface"]}, "arcface"),
        ({"train": {"epochs": "many"}}, "many"),
        ({"seedz": [0]}, "seedz"),
    ],
)
def test_config_typos_are_errors_that_name_the_key(config, key):
    with pytest.raises(WorkflowError, match=key):
        validate(config, SCHEMA)


def test_settings_json_rejects_unknown_keys_and_bad_json():
    with pytest.raises(IAAError, match="epochz"):
        parse_settings(TrainSettings, '{"epochz": 1}')
    with pytest.raises(IAAError, match="not valid JSON"):
        parse_settings(TrainSettings, "{epochs: 1")
    assert parse_settings(TrainSettings, '{"iaa": {"copies": 2}}').iaa.copies == 2
