#!/usr/bin/env bash
# Re-measure only the memory figures and the unload time of the shipped CPU profiles (a full
# run_cpu.sh takes about an hour on a busy machine): a quick calibration of each model into a
# temporary folder (one copy, 3 load/unload cycles with the model's unload read from Triton's
# log, working memory of each fresh copy), then its unload_s, working_memory,
# leak_bytes_per_unload and memory_source are written into the shipped profile, with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
MMESIM=${MMESIM:-.venv/bin/mmesim}
PY=${PY:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for spec in "tiny-mlp 2GiB" "tiny-bert 2GiB" "resnet50 4GiB"; do
  set -- $spec
  $MMESIM calibrate --model "$1" --framework python --device cpu --cpu-threads 1 --quick --copies 1 --scaling 1 \
    --concurrency 1 --cycles 3 --memory-budget "$2" --out "$tmp/$1.json"
  $PY - "$tmp/$1.json" "calibration/profiles/$1-python-cpu.json" <<'PY'
import json, sys
new, path = json.load(open(sys.argv[1])), sys.argv[2]
old = json.load(open(path))
for k in ("unload_s", "working_memory", "leak_bytes_per_unload", "memory_source"):
    old[k] = new[k]
note = (f"unload_s, working_memory and leak_bytes_per_unload re-measured {new['provenance']['date']} by "
        f"calibration/remeasure_memory.sh ({new['provenance']['command']}); the rest is from the full calibration")
old["provenance"]["notes"] = "; ".join(n for n in (old["provenance"].get("notes"), note) if n)
json.dump(old, open(path, "w"), indent=2)
open(path, "a").write("\n")
PY
done
