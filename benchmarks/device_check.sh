#!/bin/bash
# One prepared GPU check: CUDA tests, core/loss benchmarks on the GPU, training-step throughput.
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/gpu.txt
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'tv', torchvision.__version__, torch.cuda.get_device_name(0))"
echo "== CUDA tests and GPU training tests"
timeout 200 python3 -m pytest -q -p no:cacheprovider -rs tests/test_correction.py tests/test_losses.py tests/test_synthesis.py tests/test_estimator.py tests/test_train.py tests/test_backbones.py tests/test_selection.py tests/test_resume.py tests/test_train_settings.py 2>&1 | tee $OUT/pytest.txt | tail -25
echo "== bench_core on cuda"
timeout 90 python3 benchmarks/bench_core.py --device cuda --repeats 5 --loss-repeats 50 2>&1 | tee $OUT/bench_core_cuda.txt
echo "== bench_train on cuda (googlenet, batch 128 and 180)"
timeout 120 python3 benchmarks/bench_train.py --device cuda --threads 8 --batch 128 --steps 30 --warmup 5 --skip-loader 2>&1 | tee $OUT/bench_train_cuda.txt
timeout 60 python3 benchmarks/bench_train.py --device cuda --threads 8 --batch 180 --steps 30 --warmup 5 --skip-loader 2>&1 | tee -a $OUT/bench_train_cuda.txt
timeout 60 python3 benchmarks/bench_train.py --device cuda --threads 8 --batch 128 --steps 20 --warmup 5 --skip-loader --no-amp 2>&1 | tee -a $OUT/bench_train_cuda.txt
echo "== loader with 8 workers on the device's CPUs"
timeout 90 python3 benchmarks/bench_train.py --threads 8 --workers 8 --images 512 --skip-step 2>&1 | tee $OUT/bench_loader.txt
