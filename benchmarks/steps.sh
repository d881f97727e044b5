# Sourced by the GPU scripts: `step NAME SECONDS COMMAND...` runs COMMAND with its own time limit
# (so that one hang does not hide the rest), logs it to $out/NAME.log, notes its exit status and
# wall time in $out/steps.txt, and shows the log's last lines.
step() {
    local name=$1 limit=$2; shift 2
    local start=$EPOCHREALTIME
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    printf '%-14s rc %-3s %7.1f s\n' "$name" "$rc" "$(awk "BEGIN {print $EPOCHREALTIME - $start}")" | tee -a "$out/steps.txt"
    tail -n 4 "$out/$name.log"
}
