#!/usr/bin/env bash
# GPU check for `diffplan train` (not part of the test suite; run it on a CUDA machine):
#
#     bash scripts/gpu_check.sh [WORK_DIR]
#
# On small 15x15 data sets generated here (256 training, 64 validation, 64 test maps), with the release
# hyper-parameters of manifests/release_v1.yaml:
#   1. trains each planner kind for one epoch on GPU 0 (VIN, SymVIN, DE-VIN, MP-VIN, Sym-MP-VIN, GAT-VIN
#      and the continuous MP-VIN), through `diffplan train --accelerator gpu --devices 1`;
#   2. scores each written checkpoint on the GPU and compares it with the metadata (scored on the CPU);
#   3. with two GPUs or more, trains VIN with DDP on 2 GPUs (nccl, `--strategy ddp`) and checks that its
#      figures equal a single-process evaluation;
#   4. with two GPUs or more, trains two models at once, one per GPU (`--devices 0,1 --jobs 2`).
# One line per check with its time; the exit status is the number of failed checks (0: all passed).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1  # the repository root: the release manifest lives there

WORK=${1:-$(mktemp -d -t diffplan-gpu-check-XXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
export WANDB_MODE=offline WANDB_SILENT=true
PYTHON=${PYTHON:-python}
# The console script, not `python -c`: Lightning's `ddp` re-runs the command line for rank 1.
DIFFPLAN=("${DIFFPLAN:-$(command -v diffplan)}")
if [ -z "${DIFFPLAN[0]}" ]; then
    echo "FAIL  no \`diffplan\` command on PATH: pip install -e . first"
    exit 1
fi
FAILED=0
LOG="$WORK/gpu_check.log"
: > "$LOG"

check() {  # check NAME COMMAND...: run it, print PASS/FAIL with its time, keep its output in the log
    local name=$1
    shift
    local start status tenths
    start=$(date +%s%N)
    echo "=== $name: $*" >> "$LOG"
    "$@" >> "$LOG" 2>&1
    status=$?
    tenths=$((($(date +%s%N) - start) / 100000000))
    if [ "$status" -eq 0 ]; then
        printf 'PASS  %-48s %5d.%d s\n' "$name" $((tenths / 10)) $((tenths % 10))
    else
        printf 'FAIL  %-48s %5d.%d s   (exit %d; see %s)\n' "$name" $((tenths / 10)) $((tenths % 10)) "$status" "$LOG"
        FAILED=$((FAILED + 1))
    fi
}

GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$GPUS" -lt 1 ]; then
    echo "FAIL  no CUDA device visible to torch: this check needs a GPU"
    exit 1
fi
echo "diffplan GPU check: $GPUS GPU(s): $("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))"); work folder $WORK"

# A manifest of the release entries over small data sets (same model hyper-parameters, one epoch).
check "generate small data sets and manifest" "$PYTHON" - "$WORK" <<'EOF'
import sys
from pathlib import Path

import yaml

from diffplan.envs import generate_dataset

work = Path(sys.argv[1])
release = yaml.safe_load(Path("manifests/release_v1.yaml").read_text())
sizes = {"maze_size": 15, "train_size": 256, "valid_size": 64, "test_size": 64, "seed": 0}
datasets = {}
for key, dataset in release["datasets"].items():
    path = work / "data" / Path(dataset["path"]).name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        generate_dataset(
            dataset["kind"], path, has_obstacle=dataset.get("has_obstacle", True),
            cont_action=dataset.get("cont_action", False), **sizes,
        )
    datasets[key] = {**dataset, **sizes, "path": str(path)}
paths = {release["datasets"][key]["path"]: datasets[key]["path"] for key in datasets}
models = []
for entry in release["models"]:
    entry = {**entry, "data": paths[entry["data"]], "epochs": 1, "target": {"minimum": 0.0}}
    entry.pop("max_minutes", None)
    entry.pop("early_stopping_patience", None)
    models.append(entry)
manifest = {**release, "datasets": datasets, "models": models}
(work / "gpu_check.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
EOF

MANIFEST="$WORK/gpu_check.yaml"
COMMON=(--manifest "$MANIFEST" --release-root "$WORK/release" --run-root "$WORK/runs" --force)
MODELS=(VIN_maze15 SymVIN_maze15 DE-VIN_maze15 MP-VIN_graph Sym-MP-VIN_graph GAT-VIN_graph MP-VIN_continuous)

# Scores a written checkpoint on the GPU; its figures must match the metadata's (scored on the CPU).
cat > "$WORK/score_on_gpu.py" <<'EOF'
import json
import sys
from pathlib import Path

import torch

from diffplan.envs import load_split
from diffplan.release.checkpoint import load_model
from diffplan.scoring import evaluate

release, folder, name, tolerance = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
info = json.loads((release / folder / f"{name}_info.json").read_text())
model = load_model(release / folder / f"{name}.ckpt").cuda()
assert next(model.parameters()).is_cuda
split = load_split(info["training_data"]["path"], "test")
scores = evaluate(model, split, cont_action=info["environment"]["cont_action"])
torch.cuda.synchronize()
measured, recorded = scores["accuracy"], info["performance"]["test_accuracy"]
print(f"{name}: GPU test accuracy {measured:.6f}, metadata (CPU) {recorded:.6f}")
sys.exit(0 if abs(measured - recorded) <= tolerance else 1)
EOF

folder_of() { case $1 in *_maze15) echo grid ;; *_graph) echo graph ;; *) echo continuous ;; esac; }

for model in "${MODELS[@]}"; do
    check "train $model (1 GPU, 1 epoch)" \
        "${DIFFPLAN[@]}" train "${COMMON[@]}" --only "$model" --accelerator gpu --devices 1
    # GPU and CPU kernels round differently; a tie between two actions may flip on a few cells.
    check "score $model on the GPU" "$PYTHON" "$WORK/score_on_gpu.py" "$WORK/release" "$(folder_of "$model")" "$model" 0.01
done

if [ "$GPUS" -ge 2 ]; then
    check "train VIN_maze15 with DDP on 2 GPUs (nccl)" \
        "${DIFFPLAN[@]}" train "${COMMON[@]}" --only VIN_maze15 --accelerator gpu --devices 2 --strategy ddp \
        --release-root "$WORK/release_ddp"
    check "DDP figures equal a single-process evaluation" "$PYTHON" - "$WORK/release_ddp" <<'EOF'
import json
import sys
from pathlib import Path

from diffplan.envs import load_split
from diffplan.release.checkpoint import load_model
from diffplan.scoring import evaluate

release = Path(sys.argv[1])
info = json.loads((release / "grid" / "VIN_maze15_info.json").read_text())
run, performance = info["training_run"], info["performance"]
assert run["world_size"] == 2, run
model = load_model(release / "grid" / "VIN_maze15.ckpt")
valid = evaluate(model, load_split(info["training_data"]["path"], "valid"))
print(f"world size {run['world_size']}, per-device batch {run['per_device_batch_size']}; validation accuracy:"
      f" DDP {run['best_validation_accuracy']:.6f}, one process {valid['accuracy']:.6f}")
assert abs(valid["accuracy"] - performance["validation_accuracy"]) < 1e-6
assert abs(run["best_validation_accuracy"] - valid["accuracy"]) < 1e-3  # GPU vs CPU rounding
EOF
    check "train 2 models at once, one per GPU (--jobs 2)" \
        "${DIFFPLAN[@]}" train "${COMMON[@]}" --only VIN_maze15 --only DE-VIN_maze15 --accelerator gpu \
        --devices 0,1 --jobs 2 --release-root "$WORK/release_jobs" --run-root "$WORK/runs_jobs"
else
    echo "SKIP  DDP on 2 GPUs and --jobs over GPUs: one GPU only"
fi

echo "$FAILED check(s) failed; details in $LOG"
exit "$FAILED"
