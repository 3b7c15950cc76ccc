"""Checkpoints are data, not code: everything iaa writes loads with ``weights_only=True``,
and a pickle holding anything else is refused with one line, its code never run."""

import pathlib
from collections import Counter, OrderedDict
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from iaa import checkpoints, safe_load
from iaa.errors import IAAError
from iaa.export import checkpoint_provenance
from iaa.models.backbone import SynthConvNet, load_backbone, save_backbone
from iaa.models.embedder import EmbeddingModel, load_model, save_model
from iaa.selection import BestEpoch
from tests.test_train import _features, _run

MARKER = "iaa_pwned.txt"


class Payload:
    """Writes a file when unpickled: what a malicious model.pt would do."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.target), "pwned"))


@dataclass
class Meta:
    path: pathlib.Path
    n: np.int64


def test_a_trained_model_and_its_checkpoints_load_weights_only(tmp_path):
    _run(tmp_path, _features(tmp_path / "f.parquet"), selection="best_test")
    for name in ("model.pt", "selected.pt"):
        payload = torch.load(tmp_path / name, map_location="cpu", weights_only=True)
        assert isinstance(payload["class_ids"], list) and payload["class_ids"] == list(range(12))
        assert isinstance(payload["settings"], dict) and payload["epoch"] in range(1, 5)
    ckpts = sorted((tmp_path / "ckpt").glob("epoch_*.pt"))
    assert ckpts
    for path in [*ckpts, tmp_path / "ckpt" / checkpoints.BEST]:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(payload["fingerprint"], str)
    assert load_model(tmp_path / "model.pt")(torch.zeros(1, 16)).shape == (1, 8)


def test_save_model_writes_plain_values_only(tmp_path):
    model = EmbeddingModel(4, in_dim=6)
    extra = {
        "class_ids": np.arange(3), "n": np.int64(5), "x": np.float32(0.5), "nan": float("nan"),
        "where": pathlib.Path("/a/b"), "meta": Meta(pathlib.Path("c"), np.int64(2)),
        "ordered": OrderedDict(a=1), "counter": Counter({2: 1}), "shape": (1, 2),
    }  # fmt: skip
    save_model(tmp_path / "m.pt", model, extra=extra)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["class_ids"] == [0, 1, 2] and type(payload["n"]) is int and type(payload["x"]) is float
    assert payload["where"] == "/a/b" and payload["meta"] == {"path": "c", "n": 2}
    assert np.isnan(payload["nan"]) and payload["counter"] == Counter({2: 1}) and payload["shape"] == (1, 2)
    load_model(tmp_path / "m.pt")
    with pytest.raises(TypeError, match="Payload"):
        save_model(tmp_path / "bad.pt", model, extra={"x": Payload(str(tmp_path / MARKER))})
    assert not (tmp_path / "bad.pt").exists()


def test_backbone_loads_weights_only(tmp_path):
    save_backbone(
        str(tmp_path / "b.pt"), SynthConvNet(width=4), "synth", {"width": 4},
        pretrain_classes=np.int64(3), final_train_accuracy=np.float64(0.5),
    )  # fmt: skip
    payload = torch.load(tmp_path / "b.pt", weights_only=True)
    assert payload["pretrain_classes"] == 3 and type(payload["final_train_accuracy"]) is float
    load_backbone(str(tmp_path / "b.pt"))


@pytest.mark.parametrize("evil", ["path", "code"])
def test_a_pickle_with_classes_is_refused_in_one_line_without_running_code(tmp_path, monkeypatch, evil):
    monkeypatch.chdir(tmp_path)
    model = EmbeddingModel(4, in_dim=6)
    payload = {"config": model.config, "state_dict": model.state_dict()}
    payload["x"] = pathlib.Path("x") if evil == "path" else Payload(str(tmp_path / MARKER))
    torch.save(payload, tmp_path / "model.pt")
    for load in (
        lambda: load_model(tmp_path / "model.pt"),
        lambda: checkpoint_provenance(tmp_path / "model.pt", "final"),
        lambda: load_backbone(str(tmp_path / "model.pt")),
    ):
        with pytest.raises(IAAError) as info:
            load()
        message = str(info.value)
        assert (
            "\n" not in message and "weights_only=False" in message and str(tmp_path / "model.pt") in message
        )
    assert not (tmp_path / MARKER).exists()
    # the unsafe path would have run it: the test's payload is a real one
    if evil == "code":
        torch.load(tmp_path / "model.pt", weights_only=False)
        assert (tmp_path / MARKER).exists()


def test_an_unsafe_training_checkpoint_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save({"fingerprint": "f", "epoch": 1, "x": Payload(str(tmp_path / MARKER))}, ckpt / "epoch_001.pt")
    with pytest.raises(IAAError, match="delete") as info:
        checkpoints.load_latest(ckpt, "f")
    assert "\n" not in str(info.value)
    torch.save(
        {"fingerprint": "f", "epoch": 1, "x": Payload(str(tmp_path / MARKER))}, ckpt / checkpoints.BEST
    )
    with pytest.raises(IAAError):
        BestEpoch(ckpt / checkpoints.BEST, "f")
    assert not (tmp_path / MARKER).exists()


def test_a_truncated_file_is_not_called_unsafe(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(IAAError, match="cannot read model checkpoint") as info:
        load_model(tmp_path / "m.pt")
    assert "weights_only=False" not in str(info.value)
    with pytest.raises(Exception) as err:
        safe_load.load(tmp_path / "m.pt", "x")
    assert not isinstance(err.value, IAAError)
