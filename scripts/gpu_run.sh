#!/bin/bash
# On the GPU machine (docs/study/gpu/PLAN.md), in the repository root, after scripts/stage_gpu.py ran here.
#   bash scripts/gpu_run.sh collect .stage/c1      keep a call's staged files in /tmp/symtune-stage (stays while
#                                                  the machine is up), checking each against MANIFEST.sha256; the
#                                                  call that carries wheels.tar installs them into /tmp/site and
#                                                  imports what the study needs (a missing wheel fails here)
#   bash scripts/gpu_run.sh bench .stage/c2        collect the call's files, then (the wheels installed by call 1)
#                                                  bench/tune_vs_trl.py (the GPU row: random-init 135m, TRL at its
#                                                  fastest) and, where its requests were staged,
#                                                  bench/scoring_modes.py, each under its own timeout
#                                                  (TUNE_BENCH_S=120, SCORING_BENCH_S=75), results into $OUT
#   BUDGET_S=360 bash scripts/gpu_run.sh run .stage/c3 [driver args]
#                                                  collect the last call's files, fail in seconds if any part is
#                                                  missing or differs, assemble the GGUF and check its sha256,
#                                                  install the wheels, unpack the data, run scripts/gpu_study.py
#                                                  into $OUT (its results folder: <= 8 files)
#   bash scripts/gpu_run.sh check .stage/c3        the same up to the unpacking, nothing installed or run (a dry
#                                                  run on any machine: is everything there and intact?)
set -euo pipefail
S=/tmp/symtune-stage
mode=${1:?collect, bench, run or check}
dir=${2:?the call folder, e.g. .stage/c1}
shift 2

collect() {
  mkdir -p "$S"
  cp "$dir"/* "$S"/
  (cd "$S" && sha256sum --quiet -c --ignore-missing MANIFEST.sha256)
  echo "collected $(ls "$dir" | tr '\n' ' ')"
}

install() {  # wheels and the wordfreq stand-in into /tmp/site, the data and tokenizer unpacked, everything imported
  [ -f /tmp/site/.symtune-installed ] && return 0
  mkdir -p "$S/wheels" /tmp/site "$S/data-root" "$S/tokenizer"
  tar -xf "$S/wheels.tar" -C "$S/wheels"
  tar -xzf "$S/wordfreq-stub.tar.gz" -C /tmp/site
  tar -xzf "$S/data.tar.gz" -C "$S/data-root"
  tar -xzf "$S/tokenizer.tar.gz" -C "$S/tokenizer"
  [ "$mode" = check ] && { echo "unpacked $(ls "$S/wheels" | wc -l) wheels, data in $S/data-root/data, tokenizer in" \
    "$S/tokenizer ($(ls "$S/tokenizer" | tr '\n' ' '))"; return 0; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$S"/wheels/*.whl
  PYTHONPATH=/tmp/site:$PWD/src python3 -c "import transformers, trl, datasets, gguf, torch, symtune.tune.recipe, symtune.evaluate, symtune.mixture; from symtune.provenance import package_versions; print(package_versions(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
  touch /tmp/site/.symtune-installed
}

bench() {  # call 2: the tuning bench's GPU row, then the scoring bench; one failing does not stop the other
  [ -f /tmp/site/.symtune-installed ] || { echo "nothing installed: run call 1 (collect .stage/c1) first"; exit 3; }
  export PYTHONPATH=/tmp/site:$PWD/src SYMTUNE_CACHE=/tmp/symtune-cache PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  local rc=0
  timeout "${TUNE_BENCH_S:-120}" python3 bench/tune_vs_trl.py --device cuda --random-init 135m \
    --tokenizer "$S/tokenizer" --trl-fastest --data-dir "$S/data-root/data" --per-task 32 --examples 768 \
    --eval-examples 32 --workdir /tmp/tune-bench --json "${OUT:?the results folder}/tune_vs_trl.json" "$@" \
    2>&1 | tee "$OUT/tune_vs_trl.txt" || { rc=$?; echo "tune_vs_trl exited $rc (124: ran past TUNE_BENCH_S)"; }
  if [ -f "$S/scoring-requests.json" ]; then
    timeout "${SCORING_BENCH_S:-75}" python3 bench/scoring_modes.py --requests "$S/scoring-requests.json" \
      --tokenizer "$S/tokenizer" --arch 135m --device cuda --json "$OUT/scoring_modes.json" \
      2>&1 | tee "$OUT/scoring_modes.txt" || { rc=$?; echo "scoring_modes exited $rc (124: ran past SCORING_BENCH_S)"; }
  else
    echo "no scoring-requests.json staged: scoring bench skipped"
  fi
  exit $rc
}

collect
[ -f "$dir/wheels.tar" ] && install
[ "$mode" = collect ] && exit 0
[ "$mode" = bench ] && bench "$@"
[ "$mode" = run ] || [ "$mode" = check ] || { echo "unknown mode $mode"; exit 2; }

cd "$S"
missing=$(awk '{print $2}' MANIFEST.sha256 | while read -r f; do [ -f "$f" ] || echo "$f"; done)
if [ -n "$missing" ]; then
  [ "$mode" = check ] && { echo "not collected yet: $missing"; exit 0; }
  echo "missing staged files: $missing -- rerun the collect call(s) that carry them (stage.json lists the calls)"
  exit 3
fi
sha256sum --quiet -c MANIFEST.sha256
gguf=$(python3 -c "import json; print(json.load(open('stage.json'))['gguf'])")
want=$(python3 -c "import json; print(json.load(open('stage.json'))['gguf_sha256'])")
mkdir -p model
cat $(python3 -c "import json; print(' '.join(json.load(open('stage.json'))['parts']))") > "model/$gguf"
got=$(sha256sum "model/$gguf" | cut -d' ' -f1)
[ "$got" = "$want" ] || { echo "assembled $gguf has sha256 $got, expected $want"; exit 4; }
cd - >/dev/null
install
echo "assembled model/$gguf (sha256 ok)"
[ "$mode" = check ] && exit 0
export PYTHONPATH=/tmp/site:$PWD/src SYMTUNE_CACHE=/tmp/symtune-cache PYTHONUNBUFFERED=1
exec python3 scripts/gpu_study.py --budget-s "${BUDGET_S:-360}" --model "$S/model/$gguf" --data-dir "$S/data-root/data" \
  --out "${OUT:?the results folder}" --work /tmp/gpu-study-work --device cuda "$@"
