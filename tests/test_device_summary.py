"""benchmarks/device_summary.py: the workload the paper's configs plan and the figures it
derives from device_check.sh's RESULT lines, against numbers written by hand from SPEC 3-4."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("device_summary", ROOT / "benchmarks" / "device_summary.py")
device_summary = sys.modules.setdefault("device_summary", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(device_summary)

# SPEC 3/4: 100 epochs x min(train // batch, 300) iterations x batch, official train sizes.
TABLE3_IMAGES = {  # GoogLeNet: batch 128, SOP and In-Shop 180
    "cub200": 100 * (5_864 // 128) * 128,  # 45 iterations
    "cars196": 100 * (8_054 // 128) * 128,  # 62
    "sop": 100 * 300 * 180,  # 330 -> 300
    "inshop": 100 * (25_882 // 180) * 180,  # 143
    "vehicleid": 100 * 300 * 128,  # 860 -> 300
}
SOTA_IMAGES = {  # BN-Inception and ResNet-50: batch 256
    "cub200": 100 * 22 * 256,
    "cars196": 100 * 31 * 256,
    "sop": 100 * 232 * 256,
    "inshop": 100 * 101 * 256,
    "vehicleid": 100 * 300 * 256,
}


def test_table3_plans_18_runs_per_dataset_of_the_spec_schedule():
    work = device_summary.planned_workload(ROOT / "config" / "paper.yaml")
    assert {w.benchmark: w.images for w in work} == TABLE3_IMAGES
    assert {w.runs for w in work} == {3 * 3 * 2}  # seeds x losses x methods
    assert sum(w.runs * w.images for w in work) == 18 * 13_183_600  # 79.1 M per seed


def test_sota_plans_batch_256_on_both_backbones():
    work = device_summary.planned_workload(ROOT / "config" / "sota.yaml")
    assert {w.benchmark: (w.arch, w.images) for w in work} == {
        f"{d}-{arch}": (arch, n) for arch in ("bn_inception", "resnet50") for d, n in SOTA_IMAGES.items()
    }
    assert {w.runs for w in work} == {3}


def _write(folder: Path, name: str, *lines: str) -> None:
    text = [
        "noise before",
        *(f"RESULT {line} images/s over 9.0 s" for line in lines),
        "AGGREGATE 2: 1 images/s",
    ]
    (folder / name).write_text("\n".join(text) + "\n")


def test_summary_from_result_lines(tmp_path):
    on, gn = "on cuda:", "backbone=googlenet batch=128"
    _write(
        tmp_path,
        "feed.txt",
        f"single source=synthetic {gn} compile=0 {on} 4000.0",
        f"single source=store {gn} compile=0 {on} 3900.0",
        f"single source=jpeg {gn} compile=0 {on} 1300.0",
        f"compile source=store {gn} compile=1 {on} 4680.0",
        f"single source=synthetic backbone=bn_inception batch=256 compile=0 {on} 3000.0",
        f"single source=synthetic backbone=resnet50 batch=256 compile=0 {on} 2000.0",
    )
    for i, rate in enumerate((3000.0, 3100.0)):
        _write(tmp_path, f"concurrent2_{i}.txt", f"concurrent2 source=store batch=128 compile=0 {on} {rate}")
    for i in range(4):
        _write(tmp_path, f"concurrent4_{i}.txt", f"concurrent4 source=store batch=128 compile=0 {on} 1550")
    assert device_summary.aggregates(device_summary.read_results(tmp_path)) == {
        1: 3900.0,
        2: 6100.0,
        4: 6200.0,
    }
    lines = device_summary.summary(tmp_path)
    assert "store-fed / synthetic-input step rate: 3900 / 4000 = 97.5%" in lines
    assert "jpeg-fed / synthetic-input step rate: 1300 / 4000 = 32.5%" in lines
    assert "torch.compile, store-fed: 4680 vs 3900 images/s (1.20x)" in lines
    assert (
        "IAA_TRAIN_JOBS_PER_GPU=2 (the fewest within 5% of the best aggregate)" in lines
    )  # 6100 >= 0.95 * 6200
    table3 = 18 * sum(TABLE3_IMAGES.values())
    hours = table3 / 6100 / 3600  # GoogLeNet at the aggregate of the chosen count
    assert (
        f"config/paper.yaml: {table3 / 1e6:.0f} M training images, about {hours:.1f} h of training on one GPU"
        in lines
    )
    sota = 3 * sum(SOTA_IMAGES.values())  # per backbone, at its synthetic rate x the store's 97.5%
    hours = (sota / (3000 * 0.975) + sota / (2000 * 0.975)) / 3600
    assert f"config/sota.yaml: {2 * sota / 1e6:.0f} M training images, about {hours:.1f} h" in " ".join(lines)


@pytest.mark.parametrize(
    ("agg", "expected"),
    [({}, None), ({1: 100.0}, 1), ({1: 100.0, 2: 190.0, 4: 200.0}, 2), ({1: 100.0, 2: 150.0, 4: 200.0}, 4)],
)
def test_jobs_per_gpu_is_the_fewest_within_five_percent(agg, expected):
    assert device_summary.jobs_per_gpu(agg) == expected


def test_missing_rates_say_so(tmp_path):
    _write(tmp_path, "feed.txt")
    lines = device_summary.summary(tmp_path)
    table3, sota = 18 * sum(TABLE3_IMAGES.values()), 6 * sum(SOTA_IMAGES.values())
    assert lines == [
        f"config/paper.yaml: {table3 / 1e6:.0f} M training images; rate of some backbone not measured",
        f"config/sota.yaml: {sota / 1e6:.0f} M training images; rate of some backbone not measured",
    ]
