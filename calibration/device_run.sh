#!/usr/bin/env bash
# On a GPU host with no internet: install the bundle beside the host's own torch and numpy and run
# `make gpu-check`'s module, writing everything under OUT (calibration/device_bundle.sh builds the
# bundle; this file is its run.sh):
#   bash gpu-bundle/run.sh "$OUT" [--device cuda:0] [other gpu_check options]
# RUN="script.py args" runs that in the same environment instead (tests/test_device_bundle.py's
# quick check: one copy served by the bundled server).
# The bundle's wheels go into a folder put first on PYTHONPATH, without resolving dependencies
# (nothing could be downloaded): the host's Python keeps its own torch (with its CUDA), numpy and
# torch's dependencies, whether it is a system Python, a venv or conda. It must be the Python the
# bundle was built for: the Python backend's stub in tritonserver.tar.xz links that libpython.
set -euo pipefail
BUNDLE=$(cd "$(dirname "$0")" && pwd)
OUT=$(realpath -m "${1:?usage: run.sh OUT [gpu_check options]}")
shift
PYTHON=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1

echo "host: $(hostname), $($PYTHON -V 2>&1), $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
if $PYTHON -m pip --version >/dev/null 2>&1; then
    $PYTHON -m pip install -q --no-index --no-deps --target "$WORK/site" "$BUNDLE"/wheels/*.whl
else            # a Python without pip: a wheel is a zip of what goes into site-packages
    $PYTHON -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
        "$WORK/site" "$BUNDLE"/wheels/*.whl
fi
# Python's own tarfile, not tar: a bare image may have no xz (the "tar" filter keeps exec bits)
$PYTHON -c 'import sys, tarfile; t = tarfile.open(sys.argv[1]); t.extractall(sys.argv[2], **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))' \
    "$BUNDLE/tritonserver.tar.xz" "$WORK/server"
export MMESIM_TRITONSERVER="$WORK/server/pytriton/tritonserver/bin/tritonserver"
# seen by this Python and by the stubs it starts through Triton (they inherit the environment)
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
$PYTHON - <<'EOF'
import importlib.metadata as md, torch, numpy
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "| numpy", numpy.__version__, "| mmesim", md.version("mmesim"))
EOF
if [ -n "${RUN:-}" ]; then
    $PYTHON $RUN "$@"
else
    $PYTHON -m mmesim.calibrate.gpu_check --out "$OUT/gpu-check" "$@"
fi
