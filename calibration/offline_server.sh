#!/usr/bin/env bash
# The tritonserver bundled with nvidia-pytriton, trimmed for a GPU host with no internet: the
# binary, the libraries it and the Python backend load (found by ldd), the python backend and
# the stub of ONE Python version (the host's), as a tar.gz (or .tar.xz: tar compresses by the name's
# suffix, XZ_OPT sets the level). See calibration/README.md.
#   calibration/offline_server.sh 3.12 out/tritonserver-py312.tar.gz
set -euo pipefail
PYVER=${1:?usage: offline_server.sh PYTHON_VERSION OUT.tar.gz}
OUT=$(realpath -m "${2:?usage: offline_server.sh PYTHON_VERSION OUT.tar.gz}")
PY=${PY:-.venv/bin/python}
SITE=$($PY -c 'import pytriton, pathlib; print(pathlib.Path(pytriton.__file__).parent.parent)')
cd "$SITE"
STUB=pytriton/tritonserver/python_backend_stubs/$PYVER/triton_python_backend_stub
[ -f "$STUB" ] || { echo "no stub for Python $PYVER in nvidia-pytriton (have: $(ls pytriton/tritonserver/python_backend_stubs | sort -V | paste -sd " "))" >&2; exit 2; }
export LD_LIBRARY_PATH=$SITE/nvidia_pytriton.libs
libs() { ldd "$@" 2>/dev/null | awk '/nvidia_pytriton.libs/ {print $3}' | xargs -r realpath --relative-to="$SITE"; }
first=$(libs pytriton/tritonserver/bin/tritonserver pytriton/tritonserver/backends/python/libtriton_python.so | sort -u)
all=$( (echo "$first"; libs $first) | sort -u)
mkdir -p "$(dirname "$OUT")"
tar caf "$OUT" pytriton/tritonserver/bin pytriton/tritonserver/backends/python "$STUB" $all
ls -l "$OUT" | awk '{printf "%s: %.1f MiB\n", $9, $5 / 1048576}'
