#!/bin/bash
# One prepared GPU check, under 5 minutes on one H200 (issue 13). It measures:
#   1. the CUDA paths of the tests (device augmentation, store loader, losses, training);
#   2. the training step (GoogLeNet 224 px, MS + IAA, batch 128, bf16) fed by synthetic
#      tensors, by the decoded store of 3,000 generated JPEGs (train.loader: cache), and by
#      the same JPEGs through 8 DataLoader workers (train.loader: workers), with peak memory;
#   3. the same store-fed step under torch.compile (train.compile);
#   4. the aggregate images/s of 1, 2 and 4 store-fed training processes on the one GPU;
#   5. the synthetic-input step of BN-Inception and ResNet-50 (batch 256, Tables IV-V);
#   6. benchmarks/device_summary.py: the ratios, IAA_TRAIN_JOBS_PER_GPU, and the estimated
#      training hours of config/paper.yaml (Table III) and config/sota.yaml on one GPU.
# Results go to $OUT (the device tool's folder) and to the terminal; RESULT lines are the
# numbers, SUMMARY lines what they imply. Typical run: about 5 minutes.
#
# Prepare on the CPU machine: the GPU machine is offline, and its image (Python 3.12, torch
# 2.11, with scipy, scikit-learn, pandas and pyarrow; /work/.library/device/KINDS.md) lacks
# two of ours, so bring them as wheels for ITS Python, not this machine's:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl faiss-cpu pytorch-metric-learning
# and run it with carry [".whl"]:  bash benchmarks/device_check.sh
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    # A wheel that does not install costs the tests of section 1, not the measurements.
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || echo "WARNING: the wheels in .whl did not install (another Python?): section 1 may fail"
fi
export PYTHONPATH=$PWD:/tmp/site:$PWD/benchmarks
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'tv', torchvision.__version__, torch.cuda.get_device_name(0))"

echo "== 1. CUDA paths of the tests"
timeout 75 python3 -m pytest -q -p no:cacheprovider -rs tests/test_device_augment.py tests/test_store_source.py \
    tests/test_losses_pml.py tests/test_train.py -x 2>&1 | tee "$OUT/pytest.txt" | tail -15

echo "== 2. training step by input path"
# Writing 3,000 JPEGs and their store takes about a minute on one core: the time limit leaves room.
timeout 180 python3 benchmarks/bench_feed.py --prepare-only --images 3000 2>&1 | tee "$OUT/feed.txt"
for source in synthetic store; do
    timeout 50 python3 benchmarks/bench_feed.py --source "$source" --seconds 12 --tag single 2>&1 | tee -a "$OUT/feed.txt" | grep RESULT
done
timeout 60 python3 benchmarks/bench_feed.py --source jpeg --workers 8 --seconds 12 --tag single 2>&1 | tee -a "$OUT/feed.txt" | grep RESULT

echo "== 3. torch.compile (train.compile), store-fed"
timeout 75 python3 benchmarks/bench_feed.py --source store --compile --warmup 8 --seconds 12 --tag compile 2>&1 | tee -a "$OUT/feed.txt" | grep RESULT

echo "== 4. concurrent store-fed trainings on the one GPU"
for n in 2 4; do
    start=$(($(date +%s) + 35))  # every copy built and warmed up by then: one shared timed window
    for i in $(seq "$n"); do
        timeout 75 python3 benchmarks/bench_feed.py --source store --threads 2 --seconds 15 --tag "concurrent$n" \
            --start-at "$start" >"$OUT/concurrent${n}_$i.txt" 2>&1 &
    done
    wait
    cat "$OUT"/concurrent${n}_*.txt | grep -E "RESULT|WARNING"
    cat "$OUT"/concurrent${n}_*.txt | grep RESULT | awk -v n="$n" \
        '{for (i = 1; i <= NF; i++) if ($(i + 1) == "images/s") s += $i} END {print "AGGREGATE", n, "processes:", s, "images/s"}' \
        | tee -a "$OUT/feed.txt"
done

echo "== 5. other backbones, synthetic input, batch 256"
for backbone in bn_inception resnet50; do
    timeout 50 python3 benchmarks/bench_feed.py --source synthetic --backbone "$backbone" --batch 256 --warmup 3 \
        --seconds 10 --tag single 2>&1 | tee -a "$OUT/feed.txt" | grep RESULT
done

echo "== 6. summary"
python3 benchmarks/device_summary.py "$OUT" | tee "$OUT/summary.txt"
