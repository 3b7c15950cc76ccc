"""The built-in procedural benchmark: sizes, determinism, splits and learnable structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iaa.cli import main
from iaa.data.synth import SPLITS, SynthSpec, generate_synth, write_synth
from iaa.errors import IAAError
from iaa.io import read_manifest

TINY = dict(
    pretrain_classes=6,
    train_classes=6,
    test_classes=6,
    pretrain_images=(4, 6),
    train_images=(5, 5),
    test_images=(3, 7),
    families=3,
    pretrain_families=0,
    image_size=16,
)

# Enough images per class for per-class statistics; 4 families of 6 classes each.
STATS = dict(
    pretrain_classes=8,
    train_classes=8,
    test_classes=8,
    pretrain_images=(12, 12),
    train_images=(12, 12),
    test_images=(12, 12),
    families=4,
    pretrain_families=0,
    image_size=16,
)


def _pixels(root: Path, manifest: pd.DataFrame) -> np.ndarray:
    images = [np.asarray(Image.open(root / p), dtype=np.float64) for p in manifest.path]
    return np.stack(images) / 255


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("tiny")
    return root, generate_synth(root, SynthSpec.for_variant("synth", **TINY), seed=3)


@pytest.fixture(scope="module")
def stats_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, np.ndarray]:
    root = tmp_path_factory.mktemp("stats")
    manifest = generate_synth(root, SynthSpec.for_variant("synth", **STATS), seed=0, workers=2)
    return manifest, _pixels(root, manifest)


# --------------------------------------------------------------------------- spec


def test_variants_and_overrides() -> None:
    synth = SynthSpec.for_variant("synth")
    assert 80 <= synth.train_classes <= 150 and 80 <= synth.test_classes <= 150
    assert synth.train_images[0] >= 30 and synth.image_size == 32
    few = SynthSpec.for_variant("synth-fewshot")
    assert few.train_classes >= 2000 and few.test_classes >= 2000
    assert few.train_images == (2, 12) and few.tail_exponent > 0
    small = SynthSpec.for_variant("synth-fewshot", train_classes=7, image_size=16)
    assert (small.train_classes, small.image_size, small.variant) == (7, 16, "synth-fewshot")
    assert SynthSpec.for_variant("synth", test_images=[3, 4]).test_images == (3, 4)


def test_bad_variant_and_fields() -> None:
    with pytest.raises(IAAError, match="synth-fewshot"):
        SynthSpec.for_variant("cub")
    with pytest.raises(IAAError, match="^colours: unknown SynthSpec field"):
        SynthSpec.for_variant("synth", colours=3)
    with pytest.raises(IAAError, match="did you mean 'train_classes'"):
        SynthSpec.for_variant("synth", trian_classes=3)
    with pytest.raises(IAAError, match="train_images"):
        SynthSpec.for_variant("synth", train_images=(1, 4))
    with pytest.raises(IAAError, match="image_size"):
        SynthSpec.for_variant("synth", image_size=4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train_classes": -3}, "train_classes must be >= 1, got -3"),
        ({"image_size": "big"}, "image_size must be a whole number, not 'big'"),
        ({"families": True}, "families must be a whole number, not True"),
        ({"train_images": [3, "x"]}, "train_images must be a [min, max] pair of whole numbers"),
        ({"test_images": [3]}, "test_images must be a [min, max] pair of whole numbers"),
        ({"class_spread": float("nan")}, "class_spread must be a finite number, not nan"),
        ({"variation": -1.0}, "variation must be >= 0, got -1.0"),
    ],
)
def test_bad_override_values_are_iaa_errors_naming_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(IAAError) as err:
        SynthSpec.for_variant("synth", **overrides)
    assert str(err.value).startswith(message), err.value


@pytest.mark.parametrize(
    "overrides, key",
    [('{"train_classes": -3}', "train_classes"), ('{"image_size": "big"}', "image_size"),
     ('{"trian_classes": 3}', "trian_classes")],
)  # fmt: skip
def test_prepare_synth_names_a_bad_override_in_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: str, key: str
) -> None:
    args = ["prepare", "synth", "--out", str(tmp_path / "m.parquet"), "--data-dir", str(tmp_path / "data")]
    assert main([*args, "--synth", overrides]) == 2
    said = capsys.readouterr()
    assert said.out == "" and len(said.err.splitlines()) == 1, said.err
    assert said.err.startswith(f"iaa prepare: error: --synth: {key}"), said.err
    assert not (tmp_path / "data").exists() and not (tmp_path / "m.parquet").exists()


# --------------------------------------------------------------------------- manifest


def test_manifest_columns_and_files(tiny: tuple[Path, pd.DataFrame]) -> None:
    root, m = tiny
    assert list(m.columns) == ["path", "label", "split", "class_name", "family"]
    assert m.label.dtype == np.int64 and m.family.dtype == np.int64
    assert set(m.split) == set(SPLITS)
    assert m.path.is_unique
    for row in m.itertuples():
        assert row.path == f"images/{row.split}/{row.class_name}/{Path(row.path).name}"
        assert row.class_name == f"f{row.family:02d}_c{row.label:04d}"
    on_disk = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert on_disk == sorted(m.path)  # no temporary files left behind


def test_splits_have_disjoint_classes(tiny: tuple[Path, pd.DataFrame]) -> None:
    _, m = tiny
    per_split = {s: set(m.label[m.split == s]) for s in SPLITS}
    assert per_split["pretrain"].isdisjoint(per_split["train"])
    assert per_split["pretrain"].isdisjoint(per_split["test"])
    assert per_split["train"].isdisjoint(per_split["test"])
    assert (m.groupby("label").split.nunique() == 1).all()
    assert (m.groupby("label").class_name.nunique() == 1).all()
    for s in SPLITS:  # every split has the number of classes asked for, from every family
        assert len(per_split[s]) == 6
        assert set(m.family[m.split == s]) == {0, 1, 2}


def test_images_per_class_within_bounds(tiny: tuple[Path, pd.DataFrame]) -> None:
    _, m = tiny
    spec = SynthSpec.for_variant("synth", **TINY)
    counts = m.groupby(["split", "label"]).size()
    for s in SPLITS:
        low, high = spec.images_range(s)
        assert counts[s].between(low, high).all()


def test_image_size_and_mode(tiny: tuple[Path, pd.DataFrame]) -> None:
    root, m = tiny
    for p in m.path[::7]:
        with Image.open(root / p) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (16, 16)


def test_fewshot_is_long_tailed(tmp_path: Path) -> None:
    spec = SynthSpec.for_variant(
        "synth-fewshot",
        pretrain_classes=2,
        pretrain_images=(1, 1),
        train_classes=150,
        test_classes=150,
        families=6,
        pretrain_families=2,
        image_size=8,
        supersample=1,
    )
    m = generate_synth(tmp_path, spec, seed=0, workers=2)
    counts = m[m.split != "pretrain"].groupby("label").size()
    assert len(counts) == 300
    assert counts.min() >= 2 and counts.max() <= 12
    assert (counts <= 4).mean() > 0.6  # most classes have 2-4 images
    assert (counts >= 8).sum() >= 5  # ... and a tail of larger ones
    assert counts.median() <= 3


# --------------------------------------------------------------------------- determinism


def test_deterministic_across_runs_and_workers(tmp_path: Path) -> None:
    spec = SynthSpec.for_variant("synth", **TINY)
    a = generate_synth(tmp_path / "a", spec, seed=11, workers=1)
    b = generate_synth(tmp_path / "b", spec, seed=11, workers=3)
    c = generate_synth(tmp_path / "c", spec, seed=12, workers=1)
    pd.testing.assert_frame_equal(a, b)
    for p in a.path:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes(), p
    common = set(a.path) & set(c.path)
    assert common
    for p in common:
        assert (tmp_path / "a" / p).read_bytes() != (tmp_path / "c" / p).read_bytes(), p


def test_write_synth_manifest_roundtrip(tmp_path: Path) -> None:
    spec = SynthSpec.for_variant("synth", **TINY)
    out = tmp_path / "data"
    first = write_synth(out, tmp_path / "manifest.parquet", spec, seed=5, workers=1)
    before = {p: (out / p).read_bytes() for p in first.path}
    again = write_synth(out, tmp_path / "manifest.parquet", spec, seed=5, workers=2)  # rerun
    pd.testing.assert_frame_equal(first, again)
    assert all((out / p).read_bytes() == data for p, data in before.items())
    manifest = read_manifest(tmp_path / "manifest.parquet")
    assert manifest.root == out.resolve()
    assert manifest.frame.path.tolist() == first.path.tolist()
    assert manifest.frame.label.tolist() == first.label.tolist()
    assert all(p.is_file() for p in manifest.absolute_paths())


# --------------------------------------------------------------------------- structure


def test_raw_pixel_nearest_neighbour_beats_chance(
    stats_set: tuple[pd.DataFrame, np.ndarray],
) -> None:
    m, x = stats_set
    test = (m.split == "test").to_numpy()
    labels = m.label.to_numpy()[test]
    f = x[test].reshape(test.sum(), -1)
    f = f - f.mean(0)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    recall1 = (labels[sim.argmax(1)] == labels).mean()
    chance = 11 / (len(labels) - 1)  # 12 images per class
    assert recall1 > 2.5 * chance
    assert recall1 < 0.95  # not trivial even on pixels


def test_families_vary_alike(stats_set: tuple[pd.DataFrame, np.ndarray]) -> None:
    """Classes of a family have similar variation profiles, and similar means go with
    similar variations (SPEC 2.2): checked on per-pixel class statistics."""
    m, x = stats_set
    labels = m.label.to_numpy()
    classes = np.unique(labels)
    family = np.array([m.family.to_numpy()[labels == c][0] for c in classes])
    log_var = np.stack([np.log(x[labels == c].var(0).mean(-1).ravel() + 1e-4) for c in classes])
    mean = np.stack([x[labels == c].mean(0).ravel() for c in classes])

    corr = np.corrcoef(log_var)
    same = family[:, None] == family[None, :]
    off_diagonal = ~np.eye(len(classes), dtype=bool)
    within, across = corr[same & off_diagonal].mean(), corr[~same].mean()
    assert within > across + 0.1

    d_mean = np.linalg.norm(mean[:, None] - mean[None], axis=-1)
    d_var = np.linalg.norm(log_var[:, None] - log_var[None], axis=-1)
    rho = []
    for k in range(len(classes)):
        others = np.arange(len(classes)) != k
        rank_m = d_mean[k, others].argsort().argsort()
        rank_v = d_var[k, others].argsort().argsort()
        rho.append(np.corrcoef(rank_m, rank_v)[0, 1])
    assert np.mean(rho) > 0.1


def test_pretrain_families_are_kept_apart_from_train_and_test(tmp_path: Path) -> None:
    spec = SynthSpec.for_variant("synth", **{**TINY, "families": 5, "pretrain_families": 2})
    m = generate_synth(tmp_path, spec, seed=1)
    assert set(m.family[m.split == "pretrain"]) == {0, 1}
    assert set(m.family[m.split == "train"]) == set(m.family[m.split == "test"]) == {2, 3, 4}
    with pytest.raises(IAAError, match="pretrain_families"):
        SynthSpec.for_variant("synth", families=3)  # the variant's 8 pretrain families
