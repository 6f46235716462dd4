#!/usr/bin/env bash
# Download the wheels a bare GPU image lacks (bench/device_wheels.txt) into .whl/ (git-ignored), for
# CPython 3.12 manylinux x86-64, --no-deps, one version each. Run it where a package index is
# reachable; copy .whl/ with the checkout to a GPU node without network, where bench/gpu_checks.sh
# installs them with --no-index.
#   bash bench/device_wheels.sh            # fetch what is missing, drop wheels no longer listed
set -euo pipefail
cd "$(dirname "$0")/.."
LIST=bench/device_wheels.txt
DEST=.whl
mkdir -p "$DEST"
PY=${PYTHON:-python3}
specs=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$LIST" | grep '==' || true)
[ -n "$specs" ] || { echo "no NAME==VERSION lines in $LIST" >&2; exit 2; }
# wheel file names use the normalised name (dashes and dots become underscores, any case)
norm() { echo "$1" | tr 'A-Z.-' 'a-z__'; }
keep=()
for spec in $specs; do
  name=${spec%%==*}; version=${spec##*==}
  stem="$(norm "$name")-${version}-"
  keep+=("$stem")
  if ls "$DEST" | tr 'A-Z' 'a-z' | grep -q "^${stem}"; then continue; fi
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "$spec"
done
# one version of each: a wheel that no line names (an older version, a removed package) goes
for whl in "$DEST"/*.whl; do
  base=$(basename "$whl" | tr 'A-Z' 'a-z')
  listed=no
  for stem in "${keep[@]}"; do [[ $base == "$stem"* ]] && listed=yes; done
  [ $listed = yes ] || { echo "removing unlisted $whl"; rm -f "$whl"; }
done
n=$(ls "$DEST"/*.whl | wc -l)
[ "$n" -eq "${#keep[@]}" ] || { echo "expected ${#keep[@]} wheels in $DEST, found $n" >&2; exit 1; }
echo "$n wheels in $DEST ($(du -sh "$DEST" | cut -f1)); copy .whl/ with the checkout to the GPU node"
