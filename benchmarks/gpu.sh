#!/bin/bash
# The CUDA paths in one go, for a machine with one NVIDIA GPU and a CUDA build of PyTorch:
# training speed per model, the fast recipe in fp32 and in bfloat16 (data on the GPU), a resume
# (CUDA random state), a one-process torchrun over NCCL with SyncBatchNorm, evaluation and ONNX
# export of a GPU-trained run, and last the best recipe in bfloat16 ($BEST_LIMIT seconds at most).
# Each step has its own time limit so that one hang does not hide the rest; logs and results go
# to OUT.
#   usage: benchmarks/gpu.sh OUT        (data: $FMNIST_DATA_DIR or the usual lookup)
set -u
out=${1:?usage: benchmarks/gpu.sh OUT}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd)/src PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
runs=$(mktemp -d)
source "$(dirname "$0")/steps.sh"
nvidia-smi -L; $py -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
fm="$py -m fmnist"
step bench 90 $fm bench --device cuda --quiet --epochs 2 --batch-size 128 \
    --models shallow simple_cnn deep_cnn deeper_cnn resnet_sprint resnet_large --json "$out/bench.json"
step fast-fp32 60 $fm train --recipe fast --device cuda --quiet --out "$runs/fast-fp32"
step fast-bf16 60 $fm train --recipe fast --device cuda --mixed-precision --quiet --out "$runs/fast-bf16"
step resume 60 $fm resume "$runs/fast-bf16" --epochs 4 --quiet
step torchrun-nccl 90 $py -m torch.distributed.run --standalone --nproc-per-node 1 -m fmnist train \
    --recipe fast --mixed-precision --sync-batchnorm --quiet --out "$runs/fast-ddp"
step evaluate 60 $fm evaluate "$runs/fast-bf16"
step export 90 $fm export "$runs/fast-bf16" --out "$out/fast-bf16.onnx"
step best-bf16 "${BEST_LIMIT:-600}" $fm train --recipe best --device cuda --mixed-precision --quiet \
    --out "$runs/best-bf16"
for r in "$runs"/*; do
    for f in metrics.json history.csv; do
        [ -f "$r/$f" ] && cp "$r/$f" "$out/$(basename "$r")-$f"
    done
done
cat "$out/steps.txt"
