#!/usr/bin/env bash
# compare.sh: Go bench vs ../shared/bench/torch_reference.py, interleaved.
#
#   bash bench/compare.sh [rounds] [results.jsonl]     (defaults: 5, bench-results.jsonl)
#
# Each round waits until the 1-minute load average is below $MAX_LOAD (0.6;
# polled every 20 s, for at most $MAX_WAIT seconds, 600), then runs every
# case ($CASES; forward-merged runs the reference's forward, since a merged
# model is the base) on both sides, each in a fresh process,
# with the order alternating between rounds. Every result line is appended
# to the results file tagged with its round and side; the median tables are
# printed at the end (go run ./bench -summarize FILE prints them again).
# Rounds whose probe_gflops on either side fall under 100 are listed but not
# used for the medians. The reference runs through bench/reference_steps.py,
# which executes torch_reference.py's own run_case() and adds the per-step
# times, so that the median step can be compared as well as the mean.
#
# Scale mode: MODEL=DIR (a HF folder, e.g. from go run ./bench/mkmodel) runs
# the scale cases instead (load generate-b1 generate-b4 train-lora-ckpt;
# bench/scale.go) with the weights in DTYPE (auto: config.json's
# torch_dtype; float32, bfloat16), the reference side being
# bench/reference_scale.py on the same folder:
#
#   MODEL=/tmp/scale/qwen2.5-0.5b DTYPE=bfloat16 bash bench/compare.sh 3 scale-results.jsonl
#
# SCALE_ARGS passes workload flags to both sides, with the same names
# (--steps, --warmup, --batch, --seq, --prompt, --new-tokens, --runs), e.g.
# SCALE_ARGS="--steps 2".
#
# Needs Debian's python3-torch for the reference, and the OpenMP OpenBLAS
# (bash scripts/setup.sh checks it; installing python3-torch can switch it).
set -euo pipefail

rounds=${1:-5}
out=${2:-bench-results.jsonl}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ref=${REF:-$root/../shared/bench/torch_reference.py}
python=${PYTHON:-/usr/bin/python3}
max_load=${MAX_LOAD:-0.6}
max_wait=${MAX_WAIT:-600}
threads=${THREADS:-2}
model=${MODEL:-}
dtype=${DTYPE:-auto}
read -r -a scale_args <<<"${SCALE_ARGS:-}"
if [ -n "$model" ]; then
  [ -f "$model/config.json" ] || { echo "compare: MODEL=$model has no config.json" >&2; exit 1; }
  cases=${CASES:-load generate-b1 generate-b4 train-lora-ckpt}
else
  cases=${CASES:-forward forward-merged forward-backward train-lora train-lora-all train-full generate-b1 generate-b4}
fi

sel=$(update-alternatives --get-selections 2>/dev/null | grep -E '^(libblas.so.3|liblapack.so.3|libopenblas.so.0)-' || true)
if [ -n "$sel" ] && echo "$sel" | grep -qv openblas-openmp; then
  echo "compare: the BLAS alternatives are not all openblas-openmp (run: bash scripts/setup.sh):" >&2
  echo "$sel" >&2
  exit 1
fi
[ -f "$ref" ] || { echo "compare: no reference script at $ref (set REF)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$root" && go build -o "$tmp/gobench" ./bench)
export OMP_NUM_THREADS=$threads

wait_quiet() {
  local waited=0
  while :; do
    local l1
    l1=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$l1" -v m="$max_load" 'BEGIN{exit !(l < m)}'; then
      return 0
    fi
    if [ "$waited" -ge "$max_wait" ]; then
      echo "compare: load $l1 still >= $max_load after ${waited}s; running anyway" >&2
      return 0
    fi
    sleep 20
    waited=$((waited + 20))
  done
}

run_one() { # side case round load
  local side=$1 c=$2 r=$3 load=$4 line
  if [ -n "$model" ] && [ "$side" = go ]; then
    line=$("$tmp/gobench" -threads "$threads" -model "$model" -dtype "$dtype" ${scale_args[@]+"${scale_args[@]}"} -case "$c" 2>"$tmp/err" | grep '^{' | tail -1 || true)
  elif [ -n "$model" ]; then
    line=$(REF="$ref" "$python" "$root/bench/reference_scale.py" --threads "$threads" --model "$model" --dtype "$dtype" \
           ${scale_args[@]+"${scale_args[@]}"} --case "$c" 2>"$tmp/err" | grep '^{' | tail -1 || true)
  elif [ "$side" = go ]; then
    line=$("$tmp/gobench" -threads "$threads" -case "$c" 2>"$tmp/err" | grep '^{' | tail -1 || true)
  else
    # reference_steps.py runs the reference's own run_case() and adds its per-step times.
    # The reference has no merged-LoRA case: a merged model is the base, so it runs forward.
    local rc=$c
    [ "$c" = forward-merged ] && rc=forward
    line=$(REF="$ref" "$python" "$root/bench/reference_steps.py" --threads "$threads" --case "$rc" 2>"$tmp/err" |
           grep '^{' | tail -1 | sed "s/\"case\": \"$rc\"/\"case\": \"$c\"/" || true)
  fi
  if [ -z "$line" ]; then
    line=$(printf '{"case":"%s","error":%s}' "$c" "$(tail -3 "$tmp/err" | "$python" -c 'import json,sys;print(json.dumps(sys.stdin.read()))')")
  fi
  printf '{"round":%d,"side":"%s","load":"%s","result":%s}\n' "$r" "$side" "$load" "$line" | tee -a "$out"
}

{
  printf '{"round":0,"side":"go","load":"","result":%s}\n' "$("$tmp/gobench" -threads "$threads" -env)"
} >>"$out"

for r in $(seq 1 "$rounds"); do
  wait_quiet
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "compare: round $r, $(date -u +%H:%M:%S) UTC, load $load" >&2
  for c in $cases; do
    if [ $((r % 2)) = 1 ]; then order="go ref"; else order="ref go"; fi
    for side in $order; do
      run_one "$side" "$c" "$r" "$load"
    done
  done
done

"$tmp/gobench" -summarize "$out" -max-load "$max_load"
