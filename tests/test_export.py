"""The export stage: the final and the selected model's embeddings, with their provenance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import iaa.export
from iaa.errors import IAAError
from iaa.export import export_stage
from iaa.io import read_embeddings, write_embeddings
from iaa.models.embedder import EmbeddingModel, save_model

IN_DIM, DIM = 6, 4


def _features(path: Path, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A features Parquet of the synth benchmark's splits (train, test) plus rows export skips."""
    x = rng.standard_normal((23, IN_DIM)).astype(np.float32)
    labels = rng.integers(0, 5, 23)
    splits = ["train"] * 10 + ["test"] * 10 + ["pretrain"] * 3
    write_embeddings(path, x, labels, splits, [f"{i}.png" for i in range(23)])
    return x[:20], labels[:20]


def _checkpoint(path: Path, seed: int, **extra: object) -> tuple[np.ndarray, np.ndarray]:
    """A head-mode checkpoint as ``iaa train`` writes it; returns its Linear head's (W, b)."""
    torch.manual_seed(seed)
    model = EmbeddingModel(DIM, in_dim=IN_DIM)
    save_model(path, model, extra=extra)
    return model.head.weight.detach().numpy().copy(), model.head.bias.detach().numpy().copy()


def _run_extras(epoch: int, selection: str = "best_val", recipe: str = "paper") -> dict[str, object]:
    return {"epoch": epoch, "selection": selection, "selection_recall@1": 0.5, "recipe": recipe}


def _metadata(path: Path) -> dict[str, str]:
    meta = pq.read_schema(path).metadata
    return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"iaa.")}


@pytest.fixture
def forward_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times export embeds the whole source (one entry per pass)."""
    calls: list[int] = []
    real = iaa.export.embed_all

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(iaa.export, "embed_all", counting)
    return calls


def test_same_epoch_writes_both_files_from_one_pass(tmp_path, rng, forward_passes) -> None:
    feats = tmp_path / "features.parquet"
    x, labels = _features(feats, rng)
    model, selected = tmp_path / "model.pt", tmp_path / "selected.pt"
    w, b = _checkpoint(model, 0, **_run_extras(8))
    _checkpoint(selected, 0, **_run_extras(8))  # the best epoch is the last one: same weights
    out, out_sel = tmp_path / "e.parquet", tmp_path / "e.selected.parquet"
    n = export_stage(model, out, benchmark="synth", features=feats, selected=selected, out_selected=out_sel)
    assert n == 20 and len(forward_passes) == 1
    final, chosen = read_embeddings(out), read_embeddings(out_sel)
    np.testing.assert_allclose(final.embeddings, x @ w.T + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(chosen.embeddings, final.embeddings)
    np.testing.assert_array_equal(chosen.labels, labels)
    assert list(chosen.splits) == ["train"] * 10 + ["test"] * 10
    common = {"iaa.epoch": "8", "iaa.selection": "best_val", "iaa.recipe": "paper"}
    assert _metadata(out) == {**common, "iaa.model": str(model), "iaa.epoch_kind": "final"}
    assert _metadata(out_sel) == {**common, "iaa.model": str(selected), "iaa.epoch_kind": "selected"}


def test_an_earlier_selected_epoch_is_embedded_with_its_own_weights(tmp_path, rng, forward_passes) -> None:
    feats = tmp_path / "features.parquet"
    x, _ = _features(feats, rng)
    model, selected = tmp_path / "model.pt", tmp_path / "selected.pt"
    w, b = _checkpoint(model, 0, **_run_extras(10, "best_test", "released"))
    w_sel, b_sel = _checkpoint(selected, 1, **_run_extras(4, "best_test", "released"))
    out, out_sel = tmp_path / "e.parquet", tmp_path / "e.selected.parquet"
    export_stage(model, out, benchmark="synth", features=feats, selected=selected, out_selected=out_sel)
    assert len(forward_passes) == 2
    np.testing.assert_allclose(read_embeddings(out).embeddings, x @ w.T + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(read_embeddings(out_sel).embeddings, x @ w_sel.T + b_sel, rtol=1e-5, atol=1e-6)
    assert _metadata(out)["iaa.epoch"] == "10" and _metadata(out_sel)["iaa.epoch"] == "4"
    assert _metadata(out_sel)["iaa.selection"] == "best_test"
    assert _metadata(out_sel)["iaa.recipe"] == "released"


def test_a_checkpoint_without_provenance_exports_alone_as_rule_last(tmp_path, rng, forward_passes) -> None:
    feats = tmp_path / "features.parquet"
    _features(feats, rng)
    model = tmp_path / "model.pt"
    _checkpoint(model, 0)
    out = tmp_path / "e.parquet"
    export_stage(model, out, benchmark="synth", features=feats)
    assert len(forward_passes) == 1
    assert _metadata(out) == {"iaa.model": str(model), "iaa.selection": "last", "iaa.epoch_kind": "final"}


def test_export_errors_are_one_line(tmp_path, rng) -> None:
    feats = tmp_path / "features.parquet"
    _features(feats, rng)
    model, out = tmp_path / "model.pt", tmp_path / "e.parquet"
    _checkpoint(model, 0, **_run_extras(5))
    cases = {
        "other_rule": (_run_extras(3, selection="best_test"), "not the same run's models"),
        "later": (_run_extras(7), "epoch 7 is after the final model's"),
        "bad_rule": (_run_extras(3, selection="best"), "selection is 'best'"),
        "bad_epoch": ({**_run_extras(3), "epoch": "3"}, "epoch is '3'"),
    }
    for name, (extra, message) in cases.items():
        selected = tmp_path / f"{name}.pt"
        _checkpoint(selected, 1, **extra)
        with pytest.raises(IAAError, match=message) as err:
            export_stage(
                model, out, benchmark="synth", features=feats, selected=selected,
                out_selected=tmp_path / "s.parquet",
            )  # fmt: skip
        assert "\n" not in str(err.value)
        assert not out.exists() and not (tmp_path / "s.parquet").exists()  # checked before embedding
    with pytest.raises(IAAError, match="go together"):
        export_stage(model, out, benchmark="synth", features=feats, selected=model)
    with pytest.raises(IAAError, match="model checkpoint not found"):
        export_stage(
            model, out, benchmark="synth", features=feats, selected=tmp_path / "missing.pt",
            out_selected=tmp_path / "s.parquet",
        )  # fmt: skip
