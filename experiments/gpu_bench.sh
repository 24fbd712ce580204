#!/usr/bin/env bash
# Every GPU figure the project promises, in one command that fits a lent GPU machine's
# first minutes (at most BUDGET seconds, default 540: 9 minutes; each step gets what is left):
#
#   bash experiments/gpu_bench.sh            # on the GPU machine, from the project root
#   bash experiments/gpu_bench.sh --smoke    # the same steps at tiny sizes, on a CPU
#
# 1. resnet50: `progressive bench` on ResNet-50 (torchvision's shape, bfloat16), 128 and
#    224 px, batch 256: bare step, the real loop (cold and warm compilation cache), the
#    128 -> 224 switch.
# 2. peers: the flax-example ResNet-50 with a plain jax.jit step and torchvision's
#    ResNet-50 in PyTorch eager (bf16 autocast), at the same sizes and batch
#    (experiments/gpu/, copies of ../shared/gpu/).
# 3. small: ResNet-18 at width 0.25 with the small stem, and the simple CNN, at 32 and 64
#    px, batch 128, the default measures off: is one sweep process bound by the host?
# 4. pipeline: the host input pipeline on JPEGs written from the bundled photographs,
#    1 and 16 workers, 128 and 224 px.
# 5. default: the default job end to end.
# 6. trace: if a ResNet-50 target is missed and time is left, a jax.profiler trace of a
#    few steps.
#
# $OUT (default: a new temporary folder) gets five files, so that all come back from a
# lent machine (it returns at most 8): report.md (the markdown for docs/BENCHMARKS.md,
# also printed last), summary.json (its figures), log.txt (every step's output, written
# as it runs), results.tar.gz (each step's JSON and output, steps.jsonl with each step's
# status and seconds) and, if a trace was taken, trace.tar.gz. Data, caches and the
# unpacked results go under WORK (default ${TMPDIR:-/tmp}/progressive_gpu_bench).
#
# On a bare GPU machine (the lent one has jax, flax, optax, orbax and torch, not
# ml-collections, tensorflow-datasets or grain) the packages the project lacks are
# installed from wheels: WHEELS, else ./.whl, else ../shared/device-wheels. The project
# runs from this checkout (PYTHONPATH), so nothing needs installing. PYTHON (default
# python3) runs everything.
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    *) echo "gpu_bench.sh: unknown argument $arg (only --smoke)" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
WORK=${WORK:-${TMPDIR:-/tmp}/progressive_gpu_bench}
BUDGET=${BUDGET:-540}
R=$WORK/results
rm -rf "$R" "$WORK/default"
mkdir -p "$OUT" "$R"
LOG=$OUT/log.txt
: > "$LOG"
: > "$R/steps.jsonl"
start=$(date +%s)
deadline=$(( start + BUDGET ))
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # The loop's training runs are child processes.

say() { echo "$*" | tee -a "$LOG"; }

# step NAME LIMIT COMMAND...: COMMAND under min(LIMIT, the time left), its output in
# $R/NAME.out and the log; one line in steps.jsonl. Skipped when under 20 s are left.
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( deadline - $(date +%s) ))
  if (( left < 20 )); then
    say "== $name: skipped, ${left}s of the ${BUDGET}s budget left"
    echo "{\"step\": \"$name\", \"status\": \"skipped\", \"seconds\": 0, \"limit\": 0}" >> "$R/steps.jsonl"
    return 1
  fi
  (( limit > left )) && limit=$left
  say "== $name (at most ${limit}s): $*"
  local t0 t1 rc status
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" > "$R/$name.out" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  cat "$R/$name.out" >> "$LOG"
  case $rc in
    0) status=ok ;;
    124|137) status="timed out" ;;
    *) status="failed (exit $rc)" ;;
  esac
  local seconds; seconds=$(awk "BEGIN {printf \"%.1f\", $t1 - $t0}")
  say "== $name: $status in ${seconds}s"
  [[ $rc == 0 ]] || tail -n 5 "$R/$name.out"
  echo "{\"step\": \"$name\", \"status\": \"$status\", \"seconds\": $seconds, \"limit\": $limit}" >> "$R/steps.jsonl"
  return $rc
}

# The packages the machine lacks, from wheels.
if ! "$PYTHON" -c "import ml_collections, tensorflow_datasets, grain, tensorboardX" 2>/dev/null; then
  wheels=${WHEELS:-}
  for dir in .whl ../shared/device-wheels; do
    [[ -z "$wheels" && -d "$dir" ]] && wheels=$dir
  done
  if [[ -z "$wheels" ]]; then
    echo "gpu_bench.sh: ml-collections, tensorflow-datasets or grain is missing and no wheels were found: set WHEELS=FOLDER, or copy ../shared/device-wheels/*.whl to .whl/ (and carry .whl to the GPU machine)." >&2
    exit 2
  fi
  say "Installing the missing packages from $wheels into $WORK/site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$WORK/site" "$wheels"/*.whl >> "$LOG" 2>&1 || { echo "gpu_bench.sh: installing $wheels failed (see $LOG)" >&2; exit 2; }
  export PYTHONPATH=$WORK/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
"$PYTHON" - > "$R/machine.json" <<'EOF' || { echo "gpu_bench.sh: jax does not start (see above)" >&2; exit 2; }
import json, os, platform, subprocess, time
import flax, jax
device = jax.devices()[0]
try:
  driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=20).stdout.strip() or None
except (OSError, subprocess.SubprocessError):
  driver = None
print(json.dumps({"device_kind": device.device_kind, "platform": device.platform,
                  "devices": jax.device_count(), "host_cores": os.cpu_count(),
                  "python": platform.python_version(), "jax": jax.__version__,
                  "flax": flax.__version__, "driver": driver,
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))
EOF
say "Machine: $(cat "$R/machine.json")"
DATA=$WORK/tfds
bench=("$PYTHON" -m progressive bench)

if (( SMOKE )); then
  # The same steps at tiny sizes, a few steps each; the simple CNN in ResNet-50's slot
  # (the flax peer stays ResNet-50). It checks the script and measures nothing.
  BUILDER=small
  rn50_sizes=16,24
  rn50_config=--config=configs/default.py
  rn50=(--sizes=$rn50_sizes --batch_sizes=8 --smoke)
  small_points=(--sizes=16 --batch_sizes=16 --smoke --noe2e)
  small_width=(--config.model.width=0.125)
  pipeline=(--sizes=24 --workers=1,2 --images=24 --smoke)
  default_job=(--config=configs/default.py:smoke)
  peer_flag=(--smoke)
else
  BUILDER=default
  rn50_sizes=128,224
  rn50_config=--config=configs/zoo.py:resnet50,width=1,small_stem=False
  rn50=(--config.model.dtype=bfloat16 --sizes=$rn50_sizes --batch_sizes=256 --steps=20)
  small_points=(--sizes=32,64 --batch_sizes=128 --steps=50)
  small_width=()
  pipeline=(--sizes=128,224 --workers=1,16 --seconds=3)
  default_job=(--config=configs/default.py)
  peer_flag=()
fi

# After each bench's --config: the prepared data, activation statistics off.
on_data=("--config.data.data_dir=$DATA" "--config.data.builder_config=$BUILDER"
         --config.activation_stats_every=0)

step prepare 120 "$PYTHON" - "$DATA" "$BUILDER" <<'EOF'
import sys
from progressive.data import pipeline
data = {"name": "scale_shapes", "builder_config": sys.argv[2], "data_dir": sys.argv[1]}
pipeline.prepare_builtins([data])
print(f"prepared scale_shapes/{sys.argv[2]} in {sys.argv[1]}")
EOF

echo "${rn50_config#--config=}" > "$R/resnet50_config.txt"
step resnet50 270 "${bench[@]}" "$rn50_config" "${on_data[@]}" "${rn50[@]}" "--json=$R/resnet50.json"
step peer_flax 120 "$PYTHON" experiments/gpu/run_peer.py experiments/gpu/peer_flax_resnet50.py "${peer_flag[@]}"
if "$PYTHON" -c "import torch, torchvision, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  step peer_torch 90 "$PYTHON" experiments/gpu/run_peer.py experiments/gpu/peer_torch_resnet.py
else
  say "== peer_torch: skipped, no torch with CUDA here"
  echo '{"step": "peer_torch", "status": "skipped (no CUDA torch)", "seconds": 0, "limit": 0}' >> "$R/steps.jsonl"
fi
step small_resnet18 100 "${bench[@]}" --config=configs/zoo.py:resnet18,width=0.25,small_stem=True \
    "${on_data[@]}" "${small_width[@]}" "${small_points[@]}" "--json=$R/small_resnet18.json"
step small_cnn 80 "${bench[@]}" --config=configs/default.py "${on_data[@]}" "${small_points[@]}" "--json=$R/small_cnn.json"
# The host pipeline, against the rates the ResNet-50 step consumed (no second compile;
# without them, no rate rather than a compile the step's time limit may not hold).
rates=$("$PYTHON" -c "
import json, sys
rows = json.load(open(sys.argv[1]))['rows']
print(','.join(f\"{r['size']}:{r['bare_img_s']:.6g}\" for r in rows))" "$R/resnet50.json" 2>/dev/null)
step pipeline 80 "$PYTHON" -m progressive bench --pipeline --config=configs/imagenette.py \
    "${pipeline[@]}" ${rates:+"--device_rate=$rates"} --device_steps=0 "--json=$R/pipeline.json"
echo "${default_job[0]#--config=}" > "$R/default_config.txt"
step default 120 "$PYTHON" -m progressive train "${default_job[@]}" "--workdir=$WORK/default" \
    "--config.data.data_dir=$DATA" --config.progress_bar=False \
  && cp "$WORK/default/metrics.jsonl" "$R/default_metrics.jsonl"
if ! "$PYTHON" experiments/gpu/report.py "$R" --targets_met > /dev/null 2>&1; then
  # A target missed (or unmeasured): what limits the step, from 5 traced steps at the
  # largest size.
  step trace 90 "${bench[@]}" "$rn50_config" "${on_data[@]}" "${rn50[@]}" "--sizes=${rn50_sizes##*,}" --noe2e \
      "--trace=$R/trace"
fi
say "== done in $(( $(date +%s) - start ))s"
report_flags=()
(( SMOKE )) && report_flags=(--smoke)
"$PYTHON" experiments/gpu/report.py "$R" --command="bash experiments/gpu_bench.sh $*" \
    "${report_flags[@]}" > "$R/report.md"
cp "$R/report.md" "$R/summary.json" "$OUT/"
[[ -d "$R/trace" ]] && tar -czf "$OUT/trace.tar.gz" -C "$R" trace
tar -czf "$OUT/results.tar.gz" -C "$R" --exclude=trace --exclude=report.md --exclude=summary.json .
say "Results in $OUT: $(cd "$OUT" && echo *)"
cat "$R/report.md"
# Exit 1 if a step failed or ran out of time (everything it measured is still written).
! grep -q '"status": "\(failed\|timed out\)' "$R/steps.jsonl"
