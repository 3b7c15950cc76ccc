"""Model selection (SPEC 2.5 item 12): which epoch a run reports, and with which weights.

Head-mode runs on small Gaussian features; where the choice depends on R@1, the trainer's
``recall_at_1`` is replaced by a script of values so the expected epoch is known in advance.
Every R@1 the tests compare with is computed here with numpy, not by the library.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import iaa.train as train_module
from iaa import checkpoints
from iaa.config import IAASettings, TrainSettings
from iaa.errors import IAAError
from iaa.evaluate import evaluate_stage
from iaa.export import export_stage
from iaa.io import EmbeddingTable, read_embeddings, write_embeddings
from iaa.models.embedder import EmbeddingModel
from iaa.selection import BestEpoch, held_out_classes, recall_at_1
from iaa.train import TrainInputs, train_stage

TRAIN_CLASSES, TEST_CLASSES, PER_CLASS, IN_DIM, DIM, HIDDEN = 12, 6, 8, 16, 8, 16


def _features(path: Path, seed: int = 0) -> Path:
    """Gaussian classes in 16-d: 12 train classes (0-11), 6 test classes (12-17), 8 rows each."""
    rng = np.random.default_rng(seed)
    n_classes = TRAIN_CLASSES + TEST_CLASSES
    centres = rng.standard_normal((n_classes, IN_DIM)) * 2
    labels = np.repeat(np.arange(n_classes), PER_CLASS)
    emb = centres[labels] + rng.standard_normal((len(labels), IN_DIM))
    splits = np.where(labels < TRAIN_CLASSES, "train", "test")
    write_embeddings(path, emb, labels, splits, [f"img{i}.png" for i in range(len(labels))])
    return path


def _settings(**kw) -> TrainSettings:
    base = dict(
        mode="head", epochs=4, batch_size=24, samples_per_class=4, lr=1e-3, lr_milestones=[3],
        embedding_dim=DIM, head_hidden=HIDDEN, val_split="test",
        iaa=IAASettings(start_epoch=1, update_every=1, copies=2),
    )  # fmt: skip
    base.update(kw)
    return TrainSettings(**base)


def _run(run: Path, features: Path, method: str = "iaa", seed: int = 3, **kw) -> list[dict]:
    return train_stage(
        TrainInputs(features=features), loss_name="ms", method=method, seed=seed, settings=_settings(**kw),
        model_out=run / "model.pt", history_out=run / "history.csv", checkpoint_dir=run / "ckpt",
    )  # fmt: skip


def _script(monkeypatch, values: list[float], calls: list | None = None) -> list[float]:
    """Replace the trainer's R@1 with ``values``, one per call, in order."""
    remaining = list(values)

    def scripted(model, source, device, channels_last=False):
        if calls is not None:
            calls.append(np.unique(np.asarray(source.labels)))
        return remaining.pop(0)

    monkeypatch.setattr(train_module, "recall_at_1", scripted)
    return remaining


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _numpy_r1(emb: np.ndarray, labels: np.ndarray) -> float:
    """All-vs-all R@1 on cosine similarity, self excluded, over queries with a positive."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    has_positive = np.array([(labels == y).sum() > 1 for y in labels])
    return float(np.mean(labels[nearest][has_positive] == labels[has_positive]))


def _numpy_r1_qg(q: np.ndarray, ql: np.ndarray, g: np.ndarray, gl: np.ndarray) -> float:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    nearest = (qn @ gn.T).argmax(axis=1)
    has_positive = np.isin(ql, gl)
    return float(np.mean(gl[nearest][has_positive] == ql[has_positive]))


# --------------------------------------------------------------------------- best_test


def test_best_test_selects_the_first_best_epoch_and_reports_its_metrics(tmp_path, monkeypatch):
    features = _features(tmp_path / "f.parquet")
    run = tmp_path / "run"
    monkeypatch.setattr(checkpoints, "KEEP_CHECKPOINTS", 100)  # keep every epoch's weights to compare
    scripted = [0.5, 0.9, 0.7, 0.9]  # epoch 4 ties epoch 2: the first best (2) wins
    left = _script(monkeypatch, scripted)
    history = _run(run, features, selection="best_test")
    assert left == []  # one R@1 per epoch: the monitored split is the one selected on

    selected, final = _load(run / "selected.pt"), _load(run / "model.pt")
    assert (selected["epoch"], selected["selection_recall@1"], selected["selection"]) == (2, 0.9, "best_test")
    assert (final["epoch"], final["selection"]) == (4, "best_test")
    epoch2 = _load(run / "ckpt" / "epoch_002.pt")
    epoch4 = _load(run / "ckpt" / "epoch_004.pt")
    assert epoch2["epoch"] == 2
    assert _same_weights(selected["state_dict"], epoch2["model"])
    assert _same_weights(final["state_dict"], epoch4["model"])
    assert not _same_weights(selected["state_dict"], final["state_dict"])
    csv = pd.read_csv(run / "history.csv")
    assert csv["selection_recall@1"].tolist() == scripted
    assert csv["val_recall@1"].tolist() == scripted
    assert [row["selection_recall@1"] for row in history] == scripted

    # export embeds each model; evaluate scores both, and the selected one is epoch 2's
    export_stage(
        run / "model.pt", run / "final.parquet", benchmark="synth", selected=run / "selected.pt",
        out_selected=run / "selected.parquet", features=features,
    )  # fmt: skip
    table = read_embeddings(features, splits=["train", "test"])
    model = EmbeddingModel(DIM, in_dim=IN_DIM, head_hidden=HIDDEN)
    model.load_state_dict(epoch2["model"])
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(table.embeddings)).numpy()
    chosen = read_embeddings(run / "selected.parquet")
    np.testing.assert_allclose(chosen.embeddings, expected, rtol=1e-5, atol=1e-6)
    last = read_embeddings(run / "final.parquet")
    assert not np.allclose(last.embeddings, chosen.embeddings)

    result = evaluate_stage(
        run / "final.parquet",
        run / "metrics.json",
        recall_k=[1],
        selected=run / "selected.parquet",
        nmi=False,
    )
    written = json.loads((run / "metrics.json").read_text())
    assert written == json.loads(json.dumps(result))
    assert written["selection"] == "best_test"
    assert (written["final"]["epoch"], written["selected"]["epoch"]) == (4, 2)
    test = chosen.splits == "test"
    assert written["selected"]["recall@1"] == pytest.approx(
        _numpy_r1(chosen.embeddings[test], chosen.labels[test]), abs=1e-12
    )
    test = last.splits == "test"
    assert written["final"]["recall@1"] == pytest.approx(
        _numpy_r1(last.embeddings[test], last.labels[test]), abs=1e-12
    )


def test_best_test_with_no_finite_r1_falls_back_to_the_final_model(tmp_path, monkeypatch, caplog):
    run = tmp_path / "run"
    _script(monkeypatch, [math.nan] * 4)
    _run(run, _features(tmp_path / "f.parquet"), selection="best_test")
    selected, final = _load(run / "selected.pt"), _load(run / "model.pt")
    assert selected["epoch"] == final["epoch"] == 4
    assert _same_weights(selected["state_dict"], final["state_dict"])
    assert "no epoch had a finite selection R@1" in caplog.text


def test_last_selects_the_final_model(tmp_path):
    run = tmp_path / "run"
    _run(run, _features(tmp_path / "f.parquet"), selection="last", epochs=3)
    selected, final = _load(run / "selected.pt"), _load(run / "model.pt")
    assert selected["epoch"] == final["epoch"] == 3
    assert selected["selection"] == final["selection"] == "last"
    assert _same_weights(selected["state_dict"], final["state_dict"])
    assert not (run / "ckpt" / checkpoints.BEST).exists()  # nothing to keep under "last"


def test_a_killed_best_test_run_keeps_the_best_epoch_found_before_the_kill(tmp_path, monkeypatch):
    features = _features(tmp_path / "f.parquet")
    monkeypatch.setattr(checkpoints, "KEEP_CHECKPOINTS", 100)
    reference = tmp_path / "reference"
    _script(monkeypatch, [0.5, 0.9, 0.7, 0.8])
    _run(reference, features, selection="best_test")

    killed = tmp_path / "killed"
    real_save = train_module._save_checkpoint

    def save_then_die(*args):
        real_save(*args)
        if args[6].epoch == 3:  # state: killed right after epoch 3's checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_die)
    left = _script(monkeypatch, [0.5, 0.9, 0.7, 0.8])
    with pytest.raises(KeyboardInterrupt):
        _run(killed, features, selection="best_test")
    assert left == [0.8] and not (killed / "selected.pt").exists()
    monkeypatch.setattr(train_module, "_save_checkpoint", real_save)
    left = _script(monkeypatch, [0.8])  # only epoch 4 is trained (and evaluated) again
    history = _run(killed, features, selection="best_test")
    assert left == []
    assert [row["selection_recall@1"] for row in history] == [0.5, 0.9, 0.7, 0.8]

    selected = _load(killed / "selected.pt")
    assert (selected["epoch"], selected["selection_recall@1"]) == (2, 0.9)
    epoch2 = _load(reference / "ckpt" / "epoch_002.pt")["model"]
    assert _same_weights(selected["state_dict"], epoch2)
    assert _same_weights(_load(reference / "selected.pt")["state_dict"], epoch2)


def test_best_epoch_is_kept_for_its_own_run_only(tmp_path):
    torch.manual_seed(0)
    models = [torch.nn.Linear(3, 2) for _ in range(3)]
    path = tmp_path / "best.pt"
    best = BestEpoch(path, "run-a")
    assert best.epoch is None and best.state_dict() is None
    assert best.update(1, 0.5, models[0]) is True
    assert best.update(2, 0.5, models[1]) is False  # a tie keeps the earlier epoch
    assert best.update(3, math.nan, models[1]) is False
    assert best.update(4, 0.75, models[2]) is True
    assert best.update(5, 0.6, models[0]) is False

    again = BestEpoch(path, "run-a")
    assert (again.epoch, again.value) == (4, 0.75)
    assert _same_weights(again.state_dict(), models[2].state_dict())
    other = BestEpoch(path, "run-b")  # another run's best epoch is never taken
    assert other.epoch is None and other.value == -math.inf and other.state_dict() is None
    assert other.update(1, 0.1, models[0]) is True


# --------------------------------------------------------------------------- best_val


def _recording_run(monkeypatch, run: Path, features: Path, method: str, seed: int) -> dict:
    """A best_val run; returns the raw train labels it trained on and the classes each R@1 read."""
    seen: dict = {"recall": []}
    real_contiguous = train_module.contiguous_labels
    real_sampler = train_module.build_sampler

    def contiguous(labels):
        seen["train"] = np.unique(labels)
        return real_contiguous(labels)

    def sampler(kind, labels, *args):
        seen["sampler_classes"] = len(np.unique(labels))
        seen["sampler_rows"] = len(labels)
        return real_sampler(kind, labels, *args)

    monkeypatch.setattr(train_module, "contiguous_labels", contiguous)
    monkeypatch.setattr(train_module, "build_sampler", sampler)
    _script(monkeypatch, [0.5] * 20, calls=seen["recall"])
    _run(run, features, method=method, seed=seed, selection="best_val", epochs=3, val_every=1)
    return seen


def test_best_val_holds_out_the_same_train_classes_from_every_run(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="iaa.train")
    features = _features(tmp_path / "f.parquet")
    n_val = 2  # round(0.2 * 12) = 2
    held_sets = []
    for method in ("baseline", "iaa"):
        for seed in (3, 4):
            run = tmp_path / f"{method}-{seed}"
            seen = _recording_run(monkeypatch, run, features, method, seed)
            trained = set(seen["train"].tolist())
            assert trained < set(range(TRAIN_CLASSES)) and len(trained) == TRAIN_CLASSES - n_val
            assert seen["sampler_classes"] == TRAIN_CLASSES - n_val
            assert seen["sampler_rows"] == (TRAIN_CLASSES - n_val) * PER_CLASS
            held = set(range(TRAIN_CLASSES)) - trained
            # each epoch: the monitored test split, then the held-out classes (selected on)
            assert len(seen["recall"]) == 6
            for monitored, selected_on in zip(seen["recall"][0::2], seen["recall"][1::2]):
                assert set(monitored.tolist()) == set(range(TRAIN_CLASSES, TRAIN_CLASSES + TEST_CLASSES))
                assert set(selected_on.tolist()) == held
            model = _load(run / "model.pt")
            assert set(np.asarray(model["class_ids"]).tolist()) == trained
            assert f"{(TRAIN_CLASSES - n_val) * PER_CLASS} train images, {TRAIN_CLASSES - n_val} classes" in (
                caplog.text
            )
            held_sets.append(held)
    assert all(h == held_sets[0] for h in held_sets)


def test_best_val_selects_on_the_held_out_classes(tmp_path):
    """Without scripting: the selection R@1 of the last epoch is the final model's R@1 on the
    held-out train rows, computed here with numpy."""
    features = _features(tmp_path / "f.parquet")
    run = tmp_path / "run"
    history = _run(run, features, selection="best_val", epochs=3)
    table = read_embeddings(features, splits=["train"])
    final = _load(run / "model.pt")
    trained = set(np.asarray(final["class_ids"]).tolist())
    held = ~np.isin(table.labels, sorted(trained))
    assert held.sum() == 2 * PER_CLASS
    model = EmbeddingModel(DIM, in_dim=IN_DIM, head_hidden=HIDDEN)
    model.load_state_dict(final["state_dict"])
    with torch.no_grad():
        emb = model.eval()(torch.from_numpy(table.embeddings[held])).numpy()
    assert history[-1]["selection_recall@1"] == pytest.approx(_numpy_r1(emb, table.labels[held]), abs=1e-6)
    values = [row["selection_recall@1"] for row in history]
    selected = _load(run / "selected.pt")
    assert selected["epoch"] == 1 + values.index(max(values))
    assert selected["selection"] == "best_val"


@pytest.mark.parametrize(
    "classes, fraction, expected",
    [
        (10, 0.34, 3),  # round(3.4)
        (10, 0.36, 4),  # round(3.6)
        (12, 0.2, 2),  # round(2.4)
        (10, 0.05, 2),  # round(0.5) = 0: at least 2
        (5, 0.9, 3),  # round(4.5) = 4: leaves 2 to train on
        (4, 0.2, 2),  # the fewest classes: 2 held out, 2 trained
        (40, 0.5, 20),
    ],
)
def test_held_out_classes_count_and_whole_classes(classes, fraction, expected):
    ids = np.arange(classes) * 7 + 100  # non-contiguous class ids
    labels = np.repeat(ids, 3)
    mask = held_out_classes(labels, fraction)
    assert mask.dtype == bool and mask.shape == labels.shape
    held = np.unique(labels[mask])
    assert len(held) == expected
    assert np.isin(labels, held).tolist() == mask.tolist()  # whole classes, never part of one
    # the same classes whatever the row order
    order = np.random.default_rng(1).permutation(len(labels))
    assert set(np.unique(labels[order][held_out_classes(labels[order], fraction)]).tolist()) == set(
        held.tolist()
    )


@pytest.mark.parametrize("classes", [1, 2, 3])
def test_held_out_classes_needs_four_classes(classes):
    with pytest.raises(IAAError) as excinfo:
        held_out_classes(np.repeat(np.arange(classes), 5), 0.2)
    message = str(excinfo.value)
    assert "\n" not in message and "best_val" in message and f"found {classes}" in message


def test_best_val_with_too_few_train_classes_is_one_line(tmp_path):
    path = tmp_path / "f.parquet"
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 8)
    splits = np.where(labels < 3, "train", "test")
    write_embeddings(path, rng.standard_normal((48, IN_DIM)), labels, splits, [f"{i}" for i in range(48)])
    with pytest.raises(IAAError, match="at least 4 train classes, found 3"):
        _run(tmp_path / "run", path, selection="best_val", batch_size=8)


# --------------------------------------------------------------------------- recall_at_1


def _source(emb: np.ndarray, labels, splits):
    from iaa.data.sources import FeatureSource

    n = len(labels)
    table = EmbeddingTable(
        np.asarray(emb, dtype=np.float32), np.asarray(labels, dtype=np.int64),
        np.asarray(splits, dtype=object), np.array([f"{i}" for i in range(n)], dtype=object),
    )  # fmt: skip
    return FeatureSource(table)


def test_recall_at_1_is_query_against_gallery_when_the_source_has_both():
    # q0 and q1 (class 0) are each other's nearest rows, but the gallery's nearest is class 1
    emb = [[1, 0], [1, 0.05], [0.9, 0.1], [0.1, 0.9], [0, 1]]
    labels = [0, 0, 1, 0, 1]
    splits = ["query", "query", "gallery", "gallery", "query"]
    identity, cpu = torch.nn.Identity(), torch.device("cpu")
    assert recall_at_1(identity, _source(emb, labels, splits), cpu) == pytest.approx(0.0)
    # the same rows as one test split: all against all, self excluded
    all_vs_all = recall_at_1(identity, _source(emb, labels, ["test"] * 5), cpu)
    assert all_vs_all == pytest.approx(_numpy_r1(np.array(emb), np.array(labels)))
    assert all_vs_all == pytest.approx(2 / 5)


def test_recall_at_1_matches_numpy_on_random_data(rng):
    labels = np.repeat(np.arange(10), 6)
    centres = rng.standard_normal((10, 8))
    emb = (centres[labels] + 1.2 * rng.standard_normal((60, 8))).astype(np.float32)
    splits = np.where(np.arange(60) % 3 == 0, "query", "gallery")
    identity, cpu = torch.nn.Identity(), torch.device("cpu")
    q, g = splits == "query", splits == "gallery"
    got = recall_at_1(identity, _source(emb, labels, splits), cpu)
    # a fraction of 20-60 queries: 1e-6 tells any two counts apart (and allows a float32 result)
    assert got == pytest.approx(_numpy_r1_qg(emb[q], labels[q], emb[g], labels[g]), abs=1e-6)
    got = recall_at_1(identity, _source(emb, labels, ["test"] * 60), cpu)
    assert got == pytest.approx(_numpy_r1(emb, labels), abs=1e-6)
    # a linear model is applied before the R@1
    torch.manual_seed(0)
    linear = torch.nn.Linear(8, 4)
    with torch.no_grad():
        out = linear(torch.from_numpy(emb)).numpy()
    got = recall_at_1(linear, _source(emb, labels, ["test"] * 60), cpu)
    assert got == pytest.approx(_numpy_r1(out, labels), abs=1e-6)


def test_recall_at_1_is_nan_when_nothing_can_be_retrieved():
    identity, cpu = torch.nn.Identity(), torch.device("cpu")
    assert math.isnan(recall_at_1(identity, _source([[1.0, 0.0]], [0], ["test"]), cpu))
    one_per_class = _source([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0, 1, 2], ["test"] * 3)
    assert math.isnan(recall_at_1(identity, one_per_class, cpu))
