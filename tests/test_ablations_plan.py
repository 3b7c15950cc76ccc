"""`snakemake ablations` plans one train job per sweep point and seed, sharing main-table runs.

Over miniature copies of the five datasets with config/ablations.yaml and one seed; the
expected count is worked out below from the config, point by point.
"""

from __future__ import annotations

import pytest

from tests.test_paper_configs import data_root, dry_run  # noqa: F401  (a module-scoped fixture)

pytestmark = pytest.mark.slow


def test_ablations_config_plans_the_expected_train_jobs(data_root, tmp_path):  # noqa: F811
    counts = dry_run("ablations.yaml", data_root, tmp_path, [0], target="ablations")
    # Per seed, distinct runs (loss, method, settings) on each benchmark:
    #   CUB and Cars (every experiment):
    #     main runs: triplet, ms, contrastive x {baseline, IAA}                          6
    #     Table IX variants (triplet): identity, global, diagonal (= alpha=0), alpha=1,
    #       gamma=1, sigma=inf, lambda=0                                                 7
    #     Table X: six more losses x {baseline, IAA}                                    12
    #     Table XI (triplet): N = 3, 5, 7 x {off, on} + all images {off, on}
    #       (correction is 'auto' on CUB/Cars, so 'off' is a setting of its own)         8
    #     Table XII: fixed mean x 3 losses                                               3
    #     Fig. 6a λ (MS): 0, 0.2, 0.4, 0.6, 1.0 (0.8 is the main run)                    5
    #     Fig. 7a M (MS): 1, 2, 4, 5 (3 is the main run)                                 4
    #     Fig. 7b interval (MS): 1, 2, 8 (4 is the main run)                             3
    #     Fig. 8 size (MS): 64, 128, 256 x {baseline, IAA} (512 is the main run)         6
    #     Fig. 11 M: Fig. 7a's runs                                                       0
    #                                                                           total 54
    #   SOP and In-Shop: main triplet and MS x {baseline, IAA} (Table VIII needs the MS
    #     baseline, IX triplet's)                                                        4
    #     Table IX variants                                                              7
    #     Fig. 6b K (MS, correction on; 'auto' is on here, so K=25 is the main run): 4
    #     Fig. 9b β (MS, correction on; 0.1 is the main run): 4                          8
    #                                                                           total 19
    #   VehicleID: the MS baseline (Table VIII)                                          1
    #   Table VII: CUB, Cars, SOP x {BN-Inception, ResNet-50}, MS+IAA                    6
    assert counts["train"] == 2 * 54 + 2 * 19 + 1 + 6
    assert counts["prepare"] == 5 and "pretrain" not in counts
