"""Preemption: an `iaa train` process killed at any point (SIGTERM from a scheduler, or
SIGKILL) and rerun ends bit-identical to an uninterrupted run with the same seed.

One run is killed four times, rerun after each kill, and completes the fifth time: SIGTERM
during epoch 1 (no checkpoint yet), SIGKILL and then SIGTERM in the middle of a checkpoint
write, and SIGKILL at a seeded random moment after a checkpoint. Kills are real signals to
real processes. So that "in the middle of a checkpoint write" lands every time, the process
goes through a shim that writes one chosen checkpoint in two halves with a pause between
them (its temporary file is half-written when the signal arrives); everything else is the
unmodified `iaa train`. The reruns must say they resumed from the newest complete
checkpoint: a rerun that started over would also end identical, and prove nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from iaa.io import write_embeddings

pytestmark = pytest.mark.slow

SETTINGS = {
    "mode": "head", "epochs": 8, "batch_size": 64, "samples_per_class": 4, "max_iterations_per_epoch": 15,
    "lr": 1e-3, "lr_milestones": [5], "embedding_dim": 128, "head_hidden": 2048, "val_split": "test",
    "iaa": {"start_epoch": 1, "update_every": 2, "copies": 2},
}  # fmt: skip

# `python -c SHIM <iaa arguments>`: iaa's own main(), with torch.save slowed for one file.
SHIM = """
import io, os, sys, time, torch
from iaa.cli import main
slow, save = os.environ.get("SLOW_CHECKPOINT"), torch.save
def torn_save(obj, f, *args, **kwargs):
    if not (slow and os.path.basename(str(f)).startswith("." + slow + ".")):
        return save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    with open(f, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        time.sleep(20)  # the test kills the process here
        fh.write(data[len(data) // 2 :])
torch.save = torn_save
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    """60 Gaussian train classes and 10 test classes of 16 points in 64-d."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((70, 64)) * 2
    labels = np.repeat(np.arange(70), 16)
    emb = centres[labels] + rng.standard_normal((len(labels), 64))
    splits = np.where(labels < 60, "train", "test")
    path = tmp_path_factory.mktemp("features") / "features.parquet"
    write_embeddings(path, emb, labels, splits, [f"img{i}.png" for i in range(len(labels))])
    return path


class Train:
    """One `iaa train` process writing into ``run``; stderr goes to ``run/logN.txt``."""

    def __init__(self, run: Path, features: Path, slow_checkpoint: str | None = None) -> None:
        run.mkdir(parents=True, exist_ok=True)
        self.run, self.ckpt = run, run / "checkpoints"
        self.log = run / f"log{len(list(run.glob('log*.txt')))}.txt"
        env = dict(os.environ, SLOW_CHECKPOINT=slow_checkpoint or "")
        cmd = [
            sys.executable, "-c", SHIM, "--threads", "1", "train", "--loss", "ms", "--method", "iaa",
            "--seed", "3", "--features", str(features), "--out", str(run / "model.pt"),
            "--history", str(run / "history.csv"), "--checkpoints", str(self.ckpt),
            "--settings", json.dumps(SETTINGS),
        ]  # fmt: skip
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)

    def text(self) -> str:
        return self.log.read_text()

    def wait_until(self, ready, what: str, timeout: float = 240, pause: float = 0.002) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"run ended (rc {self.proc.returncode}) before {what}:\n{self.text()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"timed out waiting for {what}:\n{self.text()}")
            time.sleep(pause)

    def kill(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)
        assert self.proc.wait(60) == -sig, self.text()  # died of the signal (143/137 in a shell)

    def finish(self) -> None:
        assert self.proc.wait(120) == 0, self.text()

    def checkpoints(self) -> list[str]:
        return sorted(p.name for p in self.ckpt.glob("epoch_*.pt"))

    def temporaries(self) -> list[Path]:
        return sorted(self.run.rglob("*.tmp"))

    def torn(self, name: str) -> bool:
        """A temporary file of checkpoint ``name`` with some but not all of its bytes."""
        for path in self.ckpt.glob(f".{name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size > 0:
                    return True
        return False


def _reran_from(train: Train, newest: list[str]) -> None:
    """The run's log says it resumed from the newest complete checkpoint (or started afresh)."""
    text = train.text()
    if newest:
        epoch = int(re.search(r"\d+", newest[-1]).group())
        assert f"resumed from {train.ckpt / newest[-1]} (epoch {epoch})" in text, text
        assert f"from epoch {epoch + 1}\n" in text, text
    else:
        assert "resumed from" not in text and "from epoch 1\n" in text, text


def test_a_run_killed_four_times_ends_identical_to_an_uninterrupted_one(tmp_path, features):
    reference = Train(tmp_path / "reference", features)  # alongside the killed runs: 2 cores
    run = tmp_path / "killed"
    started = re.compile(r"from epoch \d+\n")
    landed = []

    # 1. SIGTERM during epoch 1: the log says training starts; no checkpoint exists yet.
    train = Train(run, features)
    train.wait_until(lambda: started.search(train.text()), "training starts")
    train.kill(signal.SIGTERM)
    assert train.checkpoints() == [] and train.temporaries() == []
    assert "received SIGTERM: training stopped; running the same command again resumes from the " \
        "start (no checkpoint yet)" in train.text()  # fmt: skip
    landed.append("SIGTERM in epoch 1")

    # 2. SIGKILL while epoch 3's checkpoint is half on disk under its temporary name: nothing
    # runs on SIGKILL, the torn file stays until the next start, which must not load it.
    train = Train(run, features, slow_checkpoint="epoch_003.pt")
    train.wait_until(lambda: train.torn("epoch_003.pt"), "epoch_003.pt being written")
    train.kill(signal.SIGKILL)
    _reran_from(train, [])
    assert train.checkpoints() == ["epoch_001.pt", "epoch_002.pt"]
    (torn,) = train.temporaries()
    assert torn.name.startswith(".epoch_003.pt.")
    landed.append("SIGKILL writing epoch_003.pt")

    # 3. SIGTERM while epoch 5's checkpoint is half-written: the handler unwinds the stack and
    # atomic_path removes the temporary file.
    train = Train(run, features, slow_checkpoint="epoch_005.pt")
    train.wait_until(lambda: train.torn("epoch_005.pt"), "epoch_005.pt being written")
    train.kill(signal.SIGTERM)
    assert f"removed {torn}, left by an interrupted write" in train.text()
    _reran_from(train, ["epoch_002.pt"])
    assert train.checkpoints() == ["epoch_003.pt", "epoch_004.pt"]
    assert train.temporaries() == []
    assert "received SIGTERM: training stopped; running the same command again resumes from " \
        f"{train.ckpt / 'epoch_004.pt'}" in train.text()  # fmt: skip
    landed.append("SIGTERM writing epoch_005.pt")

    # 4. SIGKILL at a seeded random moment after checkpoint 6, within 0.9 of the epoch just
    # measured (5 -> 6; this process resumed from epoch 4 and writes both), so the kill lands
    # before the run ends, whatever the machine's speed: two epochs are left
    rng = random.Random(0)
    after, fraction = "epoch_006.pt", rng.uniform(0, 0.9)
    train = Train(run, features)
    train.wait_until(lambda: (train.ckpt / "epoch_005.pt").exists(), "epoch_005.pt")
    start = time.monotonic()
    train.wait_until(lambda: (train.ckpt / after).exists(), after)
    delay = fraction * (time.monotonic() - start)
    time.sleep(delay)
    train.kill(signal.SIGKILL)
    _reran_from(train, ["epoch_004.pt"])
    before = train.checkpoints()
    landed.append(f"SIGKILL {delay:.2f} s after {after} was written, leaving {before}")
    assert not (run / "model.pt").exists()

    # 5. To the end.
    train = Train(run, features)
    train.finish()
    _reran_from(train, before)
    assert train.temporaries() == []
    reference.finish()
    print("kills landed:", "; ".join(landed))

    ours = torch.load(run / "model.pt", weights_only=False)
    ref = torch.load(reference.run / "model.pt", weights_only=False)
    for part in ("state_dict", "stats"):  # weights, and the class statistics IAA keeps
        assert ours[part].keys() == ref[part].keys()
        differ = [key for key, value in ref[part].items() if not torch.equal(ours[part][key], value)]
        assert differ == [], f"{part} differs from the uninterrupted run's"
    # Identical histories but for the wall-clock column.
    timing = ["seconds", "seconds_per_iteration", "peak_memory_mb"]  # measured, not computed
    ours_h = pd.read_csv(run / "history.csv").drop(columns=timing)
    ref_h = pd.read_csv(reference.run / "history.csv").drop(columns=timing)
    pd.testing.assert_frame_equal(ours_h, ref_h, check_exact=True)
    assert len(ref_h) == SETTINGS["epochs"]


def test_the_resized_cache_removes_only_its_own_leftovers(tmp_path, caplog):
    """What a SIGKILL left while building the resized cache (prepare) goes on the next build."""
    import logging

    from PIL import Image

    from iaa.data.datasets.resized_cache import CACHE_MARKER, build_resized_cache

    (tmp_path / "data" / "a").mkdir(parents=True)
    Image.new("RGB", (40, 30), "red").save(tmp_path / "data" / "a" / "x.png")
    cache = tmp_path / "cache"
    (cache / "a").mkdir(parents=True)
    planted = [cache / "a" / ".x.png.k3j_9q2z.tmp", cache / f".{CACHE_MARKER}.0abcdefg.tmp"]
    kept = [
        cache / "a" / ".y.png.k3j_9q2z.tmp",
        cache / "a" / ".x.png.k3j9q2z.tmp",
        cache / ".x.png.k3j_9q2z.tmp",
    ]
    for path in planted + kept:
        path.write_bytes(b"\0" * 10)
    caplog.set_level(logging.INFO)
    assert build_resized_cache(tmp_path / "data", ["a/x.png"], cache, 16, threads=1) == {}
    assert not any(p.exists() for p in planted) and all(p.exists() for p in kept)
    assert f"removed leftover {planted[0]} (10 B) from an interrupted run" in caplog.text
    assert (cache / "a" / "x.png").is_file()


# `python -c HELD_WRITE <iaa arguments>`: iaa's own main(), with the rename that completes the
# atomic write (iaa.atomic.atomic_path) of the output named $HELD_OUTPUT held until the test signals.
HELD_WRITE = """
import os, sys, time
from iaa.cli import main
held, replace = os.environ["HELD_OUTPUT"], os.replace
def held_replace(src, dst, *args, **kwargs):
    if os.path.basename(str(dst)) == held:
        print("writing", flush=True)
        time.sleep(30)  # the test sends SIGTERM here
    return replace(src, dst, *args, **kwargs)
os.replace = held_replace
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_stops_any_stage_without_leaving_its_temporary(tmp_path):
    """Every stage runs under clean_up_on_sigterm (iaa.cli.main), not only train and decode:
    SIGTERM while class-figures' CSV is complete under its temporary name removes that file,
    says so in one line, and the process dies of the signal (Python's default would leave it)."""
    import select

    out = tmp_path / "figures" / "alpha.csv"
    cmd = [sys.executable, "-c", HELD_WRITE, "class-figures", "--alpha-csv", str(out), "--n-max", "10"]
    env = dict(os.environ, HELD_OUTPUT=out.name)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline() == "writing\n", proc.stderr.read() if ready else "timed out"
        (temporary,) = out.parent.iterdir()
        assert temporary.name.startswith(".alpha.csv.") and temporary.name.endswith(".tmp")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM, err  # died of it (143 in a shell)
    assert list(out.parent.iterdir()) == [], err
    assert "received SIGTERM: class-figures stopped; its temporary files are removed" in err
