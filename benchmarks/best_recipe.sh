#!/bin/bash
# The `best` recipe, chosen on validation and then measured once, for a 2-core CPU with AVX-512:
#
#   benchmarks/best_recipe.sh choose OUT    candidates on choice seeds ($SEEDS, default 100): validation only
#   benchmarks/best_recipe.sh confirm OUT   the recipe as it ships, on fresh seeds: test figures
#
# The candidates spend the hour differently: the recipe as it ships (one network, 22 epochs), two
# or three members of it (`--members`: trained one after another on one validation split and
# combined, weights chosen on that split), fewer epochs per member, or one network trained longer.
# `choose` keeps each run's config.json, history.csv (an ensemble's one row: the mixture's
# validation, and the members' training seconds with its making) and the tested checkpoint's
# validation accuracy with its test-time views (metrics.json's `validation`, the figure the table
# compares, since an ensemble's members are mixed with their shifted views and a run's epochs are
# validated without them); the run folders, with their test figures, are deleted unread, and no
# line naming the test reaches the logs. `confirm` times the plain command (`fmnist train --recipe
# best --seed S`) on $SEEDS (default 401 402 403, which took part in no choice), keeps what it
# printed and its metrics.json. Data: $FMNIST_DATA_DIR or the usual lookup; $FLAGS are added to
# every training command (at small scale: FLAGS="shallow --no-whiten --epochs 1", a model name included).
set -u
what=${1:?usage: benchmarks/best_recipe.sh choose|confirm OUT}
out=${2:?usage: benchmarks/best_recipe.sh choose|confirm OUT}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd)/src PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
fm="$py -m fmnist"
flags=${FLAGS:-}
limit=${LIMIT:-7200}  # seconds a candidate may take before it is stopped
runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT
source "$(dirname "$0")/steps.sh"
{ lscpu | grep -E "Model name|^CPU\(s\)"; grep -q avx512f /proc/cpuinfo && echo "AVX-512: yes" || echo "AVX-512: no"; } | tee "$out/machine.txt"
case $what in
choose)
    candidates=(
        "as-shipped|"
        "2-members|--members 2"
        "2-members-16-epochs|--members 2 --epochs 16"
        "3-members-12-epochs|--members 3 --epochs 12"
        "40-epochs|--epochs 40"
    )
    choose_recipe best "$limit" "0.94 0.95" ${SEEDS:-100}
    ;;
confirm)
    confirm_recipe best ${SEEDS:-401 402 403}
    ;;
*)
    echo "usage: benchmarks/best_recipe.sh choose|confirm OUT" >&2
    exit 2
    ;;
esac
