#!/bin/bash
# The `gpu` recipe on one GPU, in two sittings of a GPU's time (each well under 15 minutes):
#
#   benchmarks/gpu_recipe.sh choose OUT    candidates on a choice seed (100): validation figures only
#   benchmarks/gpu_recipe.sh confirm OUT   the recipe as it ships, on fresh seeds 201-203: test figures
#
# `choose` trains each candidate below and keeps its config.json and history.csv (validation after
# every epoch, with the training seconds) and no test figure: the run folders, whose metrics.json
# holds one, are deleted unread. It writes OUT/choose.md: each candidate's best validation accuracy
# and its training seconds to 94, 95 and 96 % on validation (benchmarks/choice_table.py). The candidate chosen there goes into
# src/fmnist/training/recipes/gpu.toml; `confirm` then measures that recipe, once, on seeds that
# took part in no choice. Data: $FMNIST_DATA_DIR or the usual lookup. $DEVICE (default cuda) and
# $FLAGS (added to every training command; the last of a repeated flag wins) check the script at
# small scale on a CPU, e.g. DEVICE=cpu FLAGS="--epochs 1 --batch-size 90 --no-compile
# --no-mixed-precision --data-dir TINY --no-verify".
set -u
what=${1:?usage: benchmarks/gpu_recipe.sh choose|confirm OUT}
out=${2:?usage: benchmarks/gpu_recipe.sh choose|confirm OUT}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd)/src PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
fm="$py -m fmnist"
dev=${DEVICE:-cuda}
flags=${FLAGS:-}
runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT
source "$(dirname "$0")/steps.sh"
$py -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")' | tee "$out/device.txt"
case $what in
choose)
    hide=test  # the runs print their test figures: kept out of the logs and the terminal
    # name, seconds allowed, then the flags over the shipped recipe
    step as-shipped 300 $fm train --recipe gpu --device $dev --seed 100 --quiet --out "$runs/as-shipped" $flags
    step longer 300 $fm train --recipe gpu --device $dev --seed 100 --quiet --epochs 120 --out "$runs/longer" $flags
    step wrn-28-10 300 $fm train wrn_28_10 --recipe gpu --device $dev --seed 100 --quiet --epochs 40 --out "$runs/wrn-28-10" $flags
    keep_histories "$runs"
    $py "$(dirname "$0")/choice_table.py" "$out" 0.94 0.95 0.96 | tee "$out/choose.md"
    ;;
confirm)
    for seed in 201 202 203; do
        step "gpu-seed$seed" 600 $fm train --recipe gpu --device $dev --seed $seed --quiet --out "$runs/gpu-seed$seed" $flags
        cp "$runs/gpu-seed$seed/metrics.json" "$out/gpu-seed$seed-metrics.json" 2>/dev/null
        cp "$runs/gpu-seed$seed/history.csv" "$out/gpu-seed$seed-history.csv" 2>/dev/null
    done
    ;;
*)
    echo "usage: benchmarks/gpu_recipe.sh choose|confirm OUT" >&2
    exit 2
    ;;
esac
cat "$out/steps.txt"
