#!/bin/bash
# The `fast` recipe on the 2-core CPU, chosen on validation and then measured once:
#
#   benchmarks/fast_recipe.sh choose OUT    candidates on choice seeds 100-102: validation figures only
#   benchmarks/fast_recipe.sh confirm OUT   the recipe as it ships, on fresh seeds: test figures
#
# `choose` trains each candidate below on each choice seed and keeps its config.json and history.csv
# (validation after every epoch, with the training seconds) and no test figure: the run folders,
# whose metrics.json holds one, are deleted unread. OUT/choose.md has each candidate's best
# validation accuracy per seed and its training seconds to 90 and 91 % (benchmarks/choice_table.py).
# `confirm` times the plain command (`fmnist train --recipe fast --seed S`) on $SEEDS (default
# 301 302 303, which took part in no choice) and keeps what it printed and its metrics.json.
# Data: $FMNIST_DATA_DIR or the usual lookup; $FLAGS are added to every training command.
set -u
what=${1:?usage: benchmarks/fast_recipe.sh choose|confirm OUT}
out=${2:?usage: benchmarks/fast_recipe.sh choose|confirm OUT}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd)/src PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
fm="$py -m fmnist"
flags=${FLAGS:-}
runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT
source "$(dirname "$0")/steps.sh"
lscpu | grep -E "Model name|^CPU\(s\)" | tee "$out/machine.txt"
case $what in
choose)
    # name, then the flags over the shipped recipe
    candidates=(
        "as-shipped|"
        "tta|--tta"
        "flip-tta|--augment flip --tta"
        "batch-512|--batch-size 512 --lr 0.03"
        "2-epochs|--epochs 2"
        "2-epochs-lr-0.03|--epochs 2 --lr 0.03"
        "no-smoothing|--label-smoothing 0"
        "sgd|--optimizer sgd --lr 0.2 --weight-decay 0.0005"
    )
    choose_recipe fast 300 "0.90 0.91" 100 101 102
    ;;
confirm)
    confirm_recipe fast ${SEEDS:-301 302 303}
    ;;
*)
    echo "usage: benchmarks/fast_recipe.sh choose|confirm OUT" >&2
    exit 2
    ;;
esac
