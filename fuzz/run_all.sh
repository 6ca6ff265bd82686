#!/bin/sh
# Run every fuzz target (or the ones named after N) for N inputs (default 10^6), one at a
# time, at low priority, with scratch corpora under ${OUT:-/tmp/pxetwist-fuzz}; logs to
# $OUT/<target>.log.   sh fuzz/run_all.sh 1000000 [dhcp_packet protocols ...]
set -u
N=${1:-1000000}
[ $# -gt 0 ] && shift
TARGETS=${*:-config dhcp_packet dhcp6_packet tftp_packet api_bodies protocols}
OUT=${OUT:-/tmp/pxetwist-fuzz}
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH=$PWD
status=0
for target in $TARGETS; do
    corpus=$(echo "$target" | sed 's/_packet//; s/_bodies//')
    mkdir -p "$OUT/$target"
    start=$(date +%s)
    nice -n 19 python "fuzz/fuzz_$target.py" -atheris_runs="$N" -max_len=4096 \
        -print_final_stats=1 -artifact_prefix="$OUT/$target-" \
        "$OUT/$target" "fuzz/corpus/$corpus" >"$OUT/$target.log" 2>&1
    rc=$?
    [ $rc -eq 0 ] || status=$rc
    echo "$target: exit $rc, $(($(date +%s) - start)) s, $(grep -o 'Done [0-9]* in [0-9]* second' "$OUT/$target.log" | tail -1)"
done
exit $status
