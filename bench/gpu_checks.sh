#!/usr/bin/env bash
# All GPU checks in one call (for a session lent a GPU machine): installs nothing, writes every
# result under $OUT. Usage: OUT=/some/dir bash bench/gpu_checks.sh   (needs .venv carried over)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
PY=.venv/bin/python
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
# 1. synthesis: TAEF2 and ESRGAN fp16 model-only vs pipeline (TAEF2 also naive, RSS)
timeout 240 $PY bench/synth_throughput.py --families taesd,esrgan --images 2048 --esrgan-images 512 \
  --naive-images 256 --rss-sizes 2000 --batch-size 128 \
  --json "$OUT/synth_gpu.json" > "$OUT/synth_gpu.txt" 2>&1; echo "synth rc=$?" >> "$OUT/status.txt"
# 1b. every family at full size (random init), 256 px fp16: images/s, FLOPs/image, share of the fp16 peak
#     (SD-2.1 UNet + TAESD, aMUSEd-256 transformer + VQ-GAN, ViT-MAE base, ESRGAN, the aMUSEd VQ-GAN)
timeout 300 $PY bench/synth_throughput.py --families "" --random-families all --resolution 256 --batch-size 32 \
  --iters 3 --json "$OUT/families_gpu.json" > "$OUT/families_gpu.txt" 2>&1; echo "families rc=$?" >> "$OUT/status.txt"
# 2. a short bf16-mixed training run on freshly synthesized shards (GPU synth, GPU train)
timeout 200 .venv/bin/gcl-synth run --no-progress --limit 2048 --output "$OUT/shards" --batch-size 128 \
  > "$OUT/synth_run.txt" 2>&1; echo "synth-run rc=$?" >> "$OUT/status.txt"
M=$(ls "$OUT"/shards/*.manifest.json | head -1)
timeout 200 .venv/bin/gcl-train --shards "$M" --method simclr --backbone resnet18 --epochs 1 --batch-size 256 \
  --gen-prob 0.5 --output "$OUT/run" --eval-train ../shared/data/cifar10_train.npz \
  --eval-test ../shared/data/cifar10_test.npz --eval-limit 2000 > "$OUT/train.txt" 2>&1
echo "train rc=$?" >> "$OUT/status.txt"
# 3. the GPU study (studies/cifar10-gpu: 20k images, ResNet-18, 200 epochs, 6 arms x 3 seeds): one run
#    per call (--max-runs 1), cut at STUDY_SECONDS (a 200-epoch run needs several calls); a later call
#    that still has out/studies/cifar10-gpu resumes the run from its last.ckpt. STUDY_SECONDS=0 skips it.
if [ "${STUDY_SECONDS:-240}" -gt 0 ]; then
  timeout "${STUDY_SECONDS:-240}" .venv/bin/gcl-eval study studies/cifar10-gpu/study.yaml --max-runs 1 \
    > "$OUT/study.txt" 2>&1; echo "study rc=$?" >> "$OUT/status.txt"
  for log in out/studies/cifar10-gpu/runs/*/train.log out/studies/cifar10-gpu/shards/*/synth.log; do
    [ -f "$log" ] && { echo "== $log"; tail -n 5 "$log"; } >> "$OUT/study_logs.txt"
  done
  cp studies/cifar10-gpu/results.md "$OUT/study_results.md" 2>/dev/null
fi
cat "$OUT/status.txt"
