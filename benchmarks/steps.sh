# Sourced by the recipe and GPU scripts: `step NAME SECONDS COMMAND...` runs COMMAND with its own
# time limit (so that one hang does not hide the rest), logs it to $out/NAME.log, notes its exit
# status and wall time in $out/steps.txt, and shows the log's last lines. With $hide set, lines
# matching that pattern are kept out of the log (a choice made on validation shows no test figure).
step() {
    local name=$1 limit=$2; shift 2
    local start=$EPOCHREALTIME
    local rc
    if [ -n "${hide:-}" ]; then
        timeout "$limit" "$@" 2>&1 | grep -v -E "$hide" >"$out/$name.log"
        rc=${PIPESTATUS[0]}
    else
        timeout "$limit" "$@" >"$out/$name.log" 2>&1
        rc=$?
    fi
    printf '%-14s rc %-3s %7.1f s\n' "$name" "$rc" "$(awk "BEGIN {print $EPOCHREALTIME - $start}")" | tee -a "$out/steps.txt"
    tail -n 4 "$out/$name.log"
}

# `keep_histories RUNS`: each run folder's config.json and history.csv (validation only) copied to
# $out as NAME-config.json and NAME-history.csv, and of its metrics.json the `validation` entry
# alone (the tested checkpoint on validation with its test-time views) as NAME-validation.json;
# nothing else of metrics.json, which holds the test figures a choice must not see, is kept or shown.
keep_histories() {
    local r
    for r in "$1"/*; do
        cp "$r/config.json" "$out/$(basename "$r")-config.json" 2>/dev/null
        cp "$r/history.csv" "$out/$(basename "$r")-history.csv" 2>/dev/null
        ${py:-python3} -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))["validation"], open(sys.argv[2], "w"))' \
            "$r/metrics.json" "$out/$(basename "$r")-validation.json" 2>/dev/null
    done
}

# `confirm_recipe NAME SEED...`: the plain command (`fmnist train --recipe NAME --seed S`, with
# $flags) timed from start to exit on each seed; what it printed, its exit status and wall seconds
# go to $out/NAME-seedS.log, its metrics.json to $out/NAME-seedS-metrics.json.
confirm_recipe() {
    local name=$1 seed start
    shift
    for seed in "$@"; do
        start=$EPOCHREALTIME
        $fm train --recipe "$name" --seed "$seed" --out "$runs/$name-seed$seed" $flags >"$out/$name-seed$seed.log" 2>&1
        echo "rc $? wall $(awk "BEGIN {print $EPOCHREALTIME - $start}") s" >>"$out/$name-seed$seed.log"
        tail -n 4 "$out/$name-seed$seed.log"
        cp "$runs/$name-seed$seed/metrics.json" "$out/$name-seed$seed-metrics.json" 2>/dev/null
    done
}

# `choose_recipe NAME LIMIT "LEVELS" SEED...`: each of $candidates ("name|flags over the recipe")
# trained on each seed with its own time limit, no line naming the test shown or logged; then the
# runs' validation figures kept (keep_histories) and tabulated at LEVELS in $out/choose.md.
choose_recipe() {
    local recipe=$1 limit=$2 levels=$3 seed c name
    shift 3
    hide=test
    for seed in "$@"; do
        for c in "${candidates[@]}"; do
            name=${c%%|*}
            step "$name-seed$seed" "$limit" $fm train --recipe "$recipe" --seed "$seed" --quiet --out "$runs/$name-seed$seed" ${c#*|} $flags
        done
    done
    keep_histories "$runs"
    $py "$(dirname "${BASH_SOURCE[0]}")/choice_table.py" "$out" $levels | tee "$out/choose.md"
}
