"""A folder of your own images through the whole workflow, as a user runs it: `snakemake all`
with a `datasets:` entry, head mode on a tiny tree, to Table III and the FAISS indexes. The
ImageNet weights are a random GoogLeNet saved under a name of the user's own (loaded
unverified, as such files are); the folder names hold a space and a non-ASCII letter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
import yaml
from PIL import Image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def make_photos(root: Path, classes: int = 8, per_class: int = 6) -> None:
    """``classes`` folders of ``per_class`` 24 x 20 JPEGs, each class its own colour."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        colour = rng.integers(0, 256, size=3)
        for i in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 30, size=(20, 24, 3)), 0, 255).astype(np.uint8)
            path = root / f"part {c:02d}" / f"photo {i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)


def test_a_folder_of_your_own_through_snakemake_all_to_table3(tmp_path):
    base = tmp_path / "my dätä"
    make_photos(base / "photos")
    torch.manual_seed(0)
    weights = base / "my-googlenet.pth"
    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    torch.save(net.state_dict(), weights)
    results = base / "rés ults"
    overlay = {
        "benchmarks": ["parts"],
        "seeds": [0],
        "losses": ["ms"],
        "results_dir": str(results),
        "datasets": {"parts": {"format": "folder", "root": str(base / "photos"), "recall_k": [1, 2]}},
        "weights": {"dir": str(weights), "allow_download": False},
        "extract": {"image_size": 32, "resize": 36},
        "train": {
            "mode": "head", "epochs": 3, "batch_size": 8, "samples_per_class": 2,
            "embedding_dim": 16, "lr_milestones": [2], "val_every": 1,
            "iaa": {"start_epoch": 1, "update_every": 1},
        },
    }  # fmt: skip
    config = tmp_path / "parts.yaml"
    config.write_text(yaml.safe_dump(overlay))
    # The rules call `iaa`: the interpreter's own bin first, so an unactivated venv works too.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(tmp_path), "--cores", "2", "all", "--configfile", str(config),
    ]  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]

    tables = results / "parts" / "tables"
    table = pd.read_csv(tables / "table3.csv")
    assert sorted(table["method"]) == ["MS", "MS+IAA", "Pretrained"]
    assert "MS+IAA" in (tables / "table3.md").read_text()
    recall = [c for c in table.columns if c.startswith("R@")]
    values = table[recall].to_numpy()
    assert {"R@1 mean", "R@2 mean"} <= set(recall) and values.min() >= 0 and values.max() <= 100
    assert list((results / "parts" / "index").rglob("test.faiss"))
    log = "\n".join(p.read_text() for p in (results / "parts" / "logs").rglob("extract*.log"))
    assert "unverified" in log
