#!/usr/bin/env bash
# Build VBench's own environment: `bash scripts/make_vbench_env.sh DIR` (the Makefile uses .venv-vbench).
#
# Why a second venv: vbench 0.1.5 pins numpy<2, transformers==4.33.2 and timm<=1.0.12, and pulls
# torchvision unpinned (which would drag in a CUDA torch). Sol's environment has numpy 2 and a recent
# transformers, so VBench runs here as a subprocess (sol/quality/vbench_runner.py) and answers JSON.
#
# torch is pinned to the CPU wheel this machine has on disk. PyPI's torchvision 0.28.0 matches it in
# version but is built against CUDA torch: its C++ ops fail to register ("operator torchvision::nms
# does not exist"). The runner defines those ops first through torch.library, so the import works.
# On a GPU box set TORCH_SPEC/TORCHVISION_SPEC to the matching CUDA builds.
set -euo pipefail

DIR="${1:-.venv-vbench}"
PY="${PY:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCHVISION_SPEC="${TORCHVISION_SPEC:-torchvision==0.28.0}"
VBENCH_SPEC="${VBENCH_SPEC:-vbench==0.1.5}"

start=$(date +%s)
if ! test -x "$DIR/bin/python"; then
    "$PY" -m venv "$DIR"
    # make's target is DIR/bin/python: a half-built env must not look finished next time.
    trap 'status=$?; if [ $status -ne 0 ]; then echo "vbench env failed; removing $DIR" >&2; rm -rf "$DIR"; fi' EXIT
fi
pip_install() {
    # A local find-links/extra-index setup warns once per package it lacks; keep real errors only.
    "$DIR/bin/pip" install -q --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
# torch first and alone: nothing later may replace it with a CUDA build.
pip_install "$TORCH_SPEC"
# vbench's own pins (numpy<2, transformers==4.33.2, timm<=1.0.12) resolve against the torch above;
# the torch pin is repeated so pip refuses rather than swaps it.
# setuptools<81: VBench's CLIP loader imports pkg_resources, which setuptools 81 removed (without it
# background_consistency and aesthetic_quality fail at import even with their weights present).
pip_install "$TORCH_SPEC" "$TORCHVISION_SPEC" "$VBENCH_SPEC" imageio imageio-ffmpeg "setuptools<81"

# Smoke check through the same shim the runner uses (-P: the script's folder stays off sys.path).
"$DIR/bin/python" -P "$(dirname "$0")/../sol/quality/vbench_runner.py" --check
echo "vbench env ready in $DIR ($(( $(date +%s) - start )) s, $(du -sh "$DIR" | cut -f1))"
