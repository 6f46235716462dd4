#!/usr/bin/env bash
# Stage what the GPU checks read into .gpu-data/ (git-ignored; copy it with the checkout to a GPU
# node that has no ../shared): the real TAEF2 weights (5 MB) and the first 5,000 CIFAR-10 train
# images (14 MB) from ../shared. Real-ESRGAN's weights (33 MB) only with --esrgan (check 2
# otherwise times a random init of the same network: the same cost). The GPU study reads the
# whole CIFAR-10 files and Real-ESRGAN's weights from ../shared on the node.
#   bash bench/device_data.sh [--esrgan]
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
PY=${PYTHON:-python3}
"$PY" -c "import numpy" 2>/dev/null || PY=.venv/bin/python
DEST=.gpu-data
mkdir -p "$DEST/models/taef2"
cp -f "$SHARED"/models/taef2/taef2_*.safetensors "$DEST/models/taef2/"
if [ "${1:-}" = "--esrgan" ]; then
  mkdir -p "$DEST/models/realesrgan-x4plus"
  cp -f "$SHARED"/models/realesrgan-x4plus/RealESRGAN_x4plus.safetensors "$DEST/models/realesrgan-x4plus/"
else
  rm -rf "$DEST/models/realesrgan-x4plus"
fi
"$PY" - "$SHARED/data/cifar10_train.npz" "$DEST/cifar10_train_5k.npz" <<'PYEOF'
import os, sys
import numpy as np
src, dst = sys.argv[1:3]
with np.load(src) as z:
    arrays = {k: z[k][:5000] if k in ("images", "labels") else z[k] for k in ("images", "labels", "class_names")}
tmp = dst + ".tmp.npz"
np.savez_compressed(tmp, **arrays)
os.replace(tmp, dst)
PYEOF
echo "$DEST: $(du -sh "$DEST" | cut -f1); with .whl and the tree: $(du -sch "$DEST" .whl $(git ls-files) 2>/dev/null | tail -1 | cut -f1) of 64 MiB"
