#!/bin/sh
# Put onnxruntime's GPU (CUDA) or CPU build in place: `scripts/use_onnxruntime.sh gpu|cpu` (PIP=path/to/pip).
# The two wheels install the same `onnxruntime` package, so one has to go before the other is (re)installed, or
# uninstalling the first would delete the second's files. The version is the gpu extra's pin in setup.cfg.
set -eu
cd "$(dirname "$0")/.."
PIP=${PIP:-pip}
VERSION=$(sed -n 's/^[[:space:]]*onnxruntime-gpu==\([0-9][0-9.]*\)[[:space:]]*$/\1/p' setup.cfg)
[ -n "$VERSION" ] || { echo "no onnxruntime-gpu==X pin in setup.cfg" >&2; exit 1; }
case "${1:-}" in
  gpu) WANT=onnxruntime-gpu ;;
  cpu) WANT=onnxruntime ;;
  *) echo "usage: $0 gpu|cpu" >&2; exit 2 ;;
esac
$PIP uninstall -y onnxruntime onnxruntime-gpu
$PIP install --no-deps "$WANT==$VERSION"
