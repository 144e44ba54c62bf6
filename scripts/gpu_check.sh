#!/usr/bin/env bash
# The GPU check: everything in bmvit that needs a CUDA device, in one command of about 8 minutes.
#
#   bash scripts/gpu_check.sh [REPORT_DIR]        (default: $OUT if set, else runs/gpu_check)
#
# Runs on a GPU machine that already has a CUDA build of torch, numpy, scipy, safetensors, PyYAML, tqdm,
# matplotlib, Pillow and pytest. bmvit itself is used from this checkout (PYTHONPATH=src, no install, so
# the machine's torch is kept whatever its version). Packages the machine lacks (PyAV, usually) come as
# wheels in WHEELS (default .whl/), made beforehand on a machine with network access, e.g.:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl av==15.1.0
#
# Every step writes its output under REPORT_DIR and a line to REPORT_DIR/report.txt; a failed step is
# recorded and the next one still runs, so one run shows everything that is wrong. The exit status is
# the number of failed steps (0 = all passed).
set -uo pipefail
cd "$(dirname "$0")/.."
REPORT=${1:-${OUT:-runs/gpu_check}}
WHEELS=${WHEELS:-.whl}
PY=${PYTHON:-python3}
mkdir -p "$REPORT"
WORK=$(mktemp -d)
FAILED=0
START=$(date +%s)

say() { echo "$*" | tee -a "$REPORT/report.txt"; }

step() {  # step NAME TIMEOUT_S COMMAND...: run, log to REPORT/NAME.log, record pass/fail with its time
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    if timeout "$limit" "$@" >"$REPORT/$name.log" 2>&1; then
        say "PASS $name ($(( $(date +%s) - t0 )) s)"
    else
        say "FAIL $name (exit $?, $(( $(date +%s) - t0 )) s): see $name.log"
        tail -n 30 "$REPORT/$name.log"
        FAILED=$((FAILED + 1))
    fi
}

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$WHEELS"/*.whl \
        || say "FAIL installing the wheels in $WHEELS"
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 BMVIT_GPU_REPORT_DIR="$REPORT"

say "bmvit GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
step environment 60 $PY - <<'EOF'
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version())
assert torch.cuda.is_available(), "torch sees no CUDA device"
props = torch.cuda.get_device_properties(0)
print("device", props.name, f"| {props.total_memory / 2**30:.1f} GiB | capability {props.major}.{props.minor}",
      "| bf16", torch.cuda.is_bf16_supported(), "| NCCL", torch.distributed.is_nccl_available())
import av, numpy, scipy, safetensors, yaml
print("av", av.__version__, "| numpy", numpy.__version__, "| scipy", scipy.__version__)
EOF
cat "$REPORT/environment.log" >>"$REPORT/report.txt"

# The gpu-marked tests: CPU-equal tokens (TF32 off), a bf16 MViTv2-S 16x256 train step with a gradient on
# every parameter, the SDPA kernel used, matcher/criterion on GPU = CPU, NCCL collectives, predict on GPU = CPU.
step gpu_tests 200 $PY -m pytest -q -m gpu -p no:cacheprovider tests/gpu -rA
# What the decoding tests printed (nvJPEG against PyAV, against the worker path, the memory-hazard trials).
grep -E "^(nvJPEG vs PyAV|device path vs worker path|torchvision's decode_jpeg alone|data.decode=auto)" \
    "$REPORT/gpu_tests.log" >>"$REPORT/report.txt" || true

# Training under torchrun on the synthetic dataset: one epoch with evaluation, then --resume for one more.
DATA="$WORK/data" RUN="$WORK/run"
step synth 90 $PY -m bmvit synth --out "$DATA" --seed 5 --videos 4 --val-videos 1 --seconds 12 --size 160x120
TRAIN=(--config configs/synthetic_tiny.yaml "data.root=$DATA" "train.out_dir=$RUN" train.device=cuda
       train.max_minutes=0 train.checkpoint_every_steps=2 data.num_workers=2 data.cache_videos=false)
step torchrun_epoch0 120 $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m bmvit train "${TRAIN[@]}" \
    train.epochs=1
step torchrun_resume 120 $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m bmvit train "${TRAIN[@]}" \
    train.epochs=2 --resume
cp "$RUN/metrics.jsonl" "$REPORT/train_metrics.jsonl" 2>/dev/null

# The paper's model on this GPU: training clips/s, MFU, peak memory; inference key frames/s.
step bench 240 $PY -m bmvit bench --device cuda --quick --json "$REPORT/bench.json"
grep -v '^\[bench\]' "$REPORT/bench.log" >>"$REPORT/report.txt"

# JPEG frames decoded on the GPU (data.decode=device): an epoch of training through that path, then
# training clips/s decoded in the loader workers against on the GPU, on 1280x720 frames and on frames
# prepared at a 256 short side (456x256), beside one core's Pillow decode of the same JPEGs.
step synth_frames 90 $PY -m bmvit synth --out "$WORK/frames_data" --seed 6 --videos 2 --val-videos 1 --seconds 8 \
    --size 320x240 --frames
step train_decode_device 150 $PY -m bmvit train --config configs/synthetic_tiny.yaml "data.root=$WORK/frames_data" \
    "train.out_dir=$WORK/run_decode" train.device=cuda train.max_minutes=0 train.epochs=1 data.num_workers=2 \
    data.source=frames data.decode=device data.cache_videos=false
step layout_720 120 $PY scripts/make_ava_layout.py "$WORK/r720" --size 1280x720 --videos 2 --frames 300
step layout_256 60 $PY scripts/make_ava_layout.py "$WORK/r256" --size 456x256 --videos 2 --frames 300
step decode_bench 240 $PY -m bmvit bench --device cuda --data "$WORK/r720" --data "$WORK/r256" \
    --json "$REPORT/decode_bench.json"
grep -v '^\[bench\]' "$REPORT/decode_bench.log" >>"$REPORT/report.txt"

# bmvit predict on the GPU gives the CPU's rows (fp32, TF32 off) within tolerance.
VIDEO=$(ls "$DATA"/videos/*.mp4 2>/dev/null | tail -n 1)
step predict_cpu 90 $PY -m bmvit predict --source "$VIDEO" --out "$WORK/pred_cpu" --device cpu --max-rows 0
step predict_cuda 90 $PY -m bmvit predict --source "$VIDEO" --out "$WORK/pred_cuda" --device cuda --amp off --max-rows 0
step predict_equal 30 $PY - "$WORK/pred_cpu" "$WORK/pred_cuda" <<'EOF'
import sys
from collections import defaultdict
from pathlib import Path

def grouped(path):
    """Rows per (video, second, action), best score first: near-equal scores may trade places between devices."""
    groups = defaultdict(list)
    for line in path.read_text().splitlines():
        v, t, x1, y1, x2, y2, a, score = line.split(",")
        groups[(v, t, a)].append([float(score), float(x1), float(y1), float(x2), float(y2)])
    return {k: sorted(rows, reverse=True) for k, rows in groups.items()}

cpu_dir, gpu_dir = map(Path, sys.argv[1:3])
csvs = sorted(cpu_dir.glob("*.csv"))
assert csvs, f"no CSV written in {cpu_dir}"
for cpu_csv in csvs:
    a, b = grouped(cpu_csv), grouped(gpu_dir / cpu_csv.name)
    assert a.keys() == b.keys(), f"{cpu_csv.name}: key frames or actions differ"
    worst = max(abs(x - y) for k in a for ra, rb in zip(a[k], b[k]) for x, y in zip(ra, rb))
    assert all(len(a[k]) == len(b[k]) for k in a), f"{cpu_csv.name}: row counts differ"
    assert worst <= 2e-3, f"{cpu_csv.name}: largest box/score difference {worst}"
    print(f"{cpu_csv.name}: {sum(map(len, a.values()))} rows equal within {worst:.1e}")
EOF

say "$FAILED step(s) failed; $(( $(date +%s) - START )) s in all"
rm -rf "$WORK"
exit "$FAILED"
