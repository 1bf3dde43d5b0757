#!/usr/bin/env bash
# Everything `make gpu-check` needs on a GPU host with no internet beyond the host's own Python,
# torch and numpy (of any version), built here for the host's Python version:
#   calibration/device_bundle.sh 3.12 gpu-bundle
# writes gpu-bundle/wheels/ (mmesim and the packages the check imports, at the versions this
# repository's .venv runs, for that Python; torch, numpy and torch's own dependencies left out),
# gpu-bundle/tritonserver.tar.xz (calibration/offline_server.sh: the bundled server trimmed to that
# Python's stub) and gpu-bundle/run.sh (calibration/device_run.sh), and fails if the whole is over
# the 64 MiB a lent machine carries. On the host: `bash gpu-bundle/run.sh OUT [--device cuda:0]`.
# See calibration/README.md, "A lent GPU host".
set -euo pipefail
PYVER=${1:?usage: device_bundle.sh PYTHON_VERSION OUT_DIR}
OUT=$(realpath -m "${2:?usage: device_bundle.sh PYTHON_VERSION OUT_DIR}")
PY=${PY:-.venv/bin/python}
LIMIT_MIB=${LIMIT_MIB:-64}
HERE=$(cd "$(dirname "$0")/.." && pwd)

# What `python -m mmesim.calibrate.gpu_check` imports (mmesim's own dependencies, tritonclient's
# HTTP client, transformers for the zoo's architectures), found by importing it in a bare
# environment of torch and numpy. Not among them: matplotlib (mmesim imports it to plot only),
# rich's pygments and markdown-it (syntax and Markdown, which mmesim does not print), hf-xet and
# requests (downloads from the Hugging Face hub: the zoo downloads nothing).
PACKAGES="simpy pydantic pydantic-core annotated-types typing-inspection pyyaml rich
psutil nvidia-ml-py tritonclient python-rapidjson urllib3 ml-dtypes gevent geventhttpclient
greenlet zope.interface zope.event brotli certifi transformers huggingface-hub safetensors tokenizers
regex tqdm packaging httpx2 httpcore2 truststore anyio h11 idna"

rm -rf "$OUT" && mkdir -p "$OUT/wheels"
# first, since it says which Python versions have a stub; xz -9e: 25 MiB where gzip makes 38, in a minute
XZ_OPT="${XZ_LEVEL:--9e} -T0" PY=$PY "$HERE/calibration/offline_server.sh" "$PYVER" "$OUT/tritonserver.tar.xz" >/dev/null
pins=$($PY -m pip freeze --exclude-editable | tr 'A-Z_' 'a-z-')
wanted=()
for name in $PACKAGES; do
    pin=$(grep -E "^${name//./\\.}==" <<<"$pins" || true)
    wanted+=("${pin:-$name}")
done
$PY -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version "$PYVER" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$OUT/wheels" "${wanted[@]}"
$PY -m pip wheel -q --no-deps --no-build-isolation -w "$OUT/wheels" "$HERE"

cp "$HERE/calibration/device_run.sh" "$OUT/run.sh"

bytes() { du -sb "$@" | awk '{s += $1} END {print s}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
total=$(bytes "$OUT")
echo "wheels $(mib "$(bytes "$OUT/wheels")") MiB ($(ls "$OUT/wheels" | wc -l) files), tritonserver $(mib "$(bytes "$OUT/tritonserver.tar.xz")") MiB, in all $(mib "$total") MiB"
if (( total > LIMIT_MIB * 1048576 )); then
    echo "over the ${LIMIT_MIB} MiB a lent machine carries" >&2
    exit 1
fi
