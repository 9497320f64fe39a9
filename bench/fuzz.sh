#!/usr/bin/env bash
# Fuzzes flowinit's input handling for a bounded time, niced (the machine is
# shared with the benchmarks), and prints per target: executions, exec/s,
# corpus size and crashes found.
#
#   bench/fuzz.sh                   # every target, FUZZ_SECONDS (60) each
#   bench/fuzz.sh --smoke           # every target ~10 s: for CI
#   bench/fuzz.sh unit_file ...     # only some targets
#
# FUZZ_SECONDS  time per target (default 60; 10 with --smoke)
# FUZZ_KNOWN    reported-but-unfixed findings to fuzz past (fuzz/README.md)
# FUZZ_ARGS     extra libFuzzer flags, e.g. "-max_len=8192"
#
# Targets and seeds live in fuzz/ (see fuzz/README.md). Each target first
# replays its inputs in fuzz/regressions/<target>/, then fuzzes starting
# from its grown corpus fuzz/work/<target>/ (kept between runs, not
# committed) and the committed seeds fuzz/corpus/<target>/, with the
# dictionary fuzz/dicts/<target>.dict when there is one. A crash leaves
# its input in fuzz/artifacts/<target>/. Exit status: 0 when nothing
# crashed, 1 otherwise.
#
# cargo-fuzz wants a nightly toolchain; RUSTC_BOOTSTRAP=1 lets the stable
# one accept the nightly flags it passes. cargo-fuzz is installed from
# crates.io when missing; libFuzzer is built with the C++ compiler.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
fuzz=$root/fuzz

seconds=${FUZZ_SECONDS:-60}
targets=()
for a in "$@"; do
    case $a in
        --smoke) seconds=${FUZZ_SECONDS:-10} ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $a" >&2; exit 2 ;;
        *) targets+=("$a") ;;
    esac
done
all=(unit_file control_request router_request line_splitter upstream_response)
((${#targets[@]})) || targets=("${all[@]}")

export RUSTC_BOOTSTRAP=1
export FUZZ_KNOWN=${FUZZ_KNOWN:-}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    nice -n 19 cargo install --quiet --locked cargo-fuzz >&2
fi
# Release build with debug assertions and overflow checks (cargo-fuzz's
# default); no sanitizer: the fuzzed modules are safe Rust, so ASan would
# only halve the speed.
build=(--sanitizer none)
cd "$fuzz"
logdir=$fuzz/work/logs
mkdir -p "$logdir"
echo "building fuzz targets" >&2
nice -n 19 cargo fuzz build "${build[@]}" >"$logdir/build.log" 2>&1 || { cat "$logdir/build.log" >&2; exit 1; }
status=0
summary=()
for t in "${targets[@]}"; do
    [[ -f $fuzz/fuzz_targets/$t.rs ]] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
    mkdir -p "$fuzz/work/$t" "$fuzz/artifacts/$t"
    log=$logdir/$t.log
    : >"$log"
    : >"$logdir/$t.regressions.log"

    regressed=0
    if compgen -G "$fuzz/regressions/$t/*" >/dev/null; then
        for f in "$fuzz/regressions/$t"/*; do
            if ! out=$(nice -n 19 cargo fuzz run "${build[@]}" "$t" "$f" -- -runs=1 </dev/null 2>&1); then
                regressed=$((regressed + 1))
                echo "$t: regression input still fails: fuzz/regressions/$t/$(basename "$f")" >&2
                grep -m1 -A1 'panicked at' <<<"$out" | sed 's/^/    /' >&2 || true
            fi
            printf '%s\n' "$out" >>"$logdir/$t.regressions.log"
        done
    fi

    dict=()
    [[ -f $fuzz/dicts/$t.dict ]] && dict=(-dict="$fuzz/dicts/$t.dict")
    stamp=$logdir/$t.start
    touch "$stamp"
    echo "fuzzing $t for ${seconds}s" >&2
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    nice -n 19 cargo fuzz run "${build[@]}" "$t" "$fuzz/work/$t" "$fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
        ${FUZZ_ARGS:-} </dev/null >>"$log" 2>&1 || true
    crashes=$(find "$fuzz/artifacts/$t" -type f -newer "$stamp" | wc -l)

    # Every figure may be missing (a crash while loading the corpus).
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [[ -z $execs ]]; then
        # Stopped by a crash before the final stats: the last status line.
        execs=$({ grep -o '^#[0-9]*' "$log" || true; } | tail -1 | tr -d '#')
        rate=$({ grep -o 'exec/s: [0-9]*' "$log" || true; } | tail -1 | cut -d' ' -f2)
    fi
    # libFuzzer's live corpus (seeds included); fuzz/work/ also keeps
    # inputs that later ones superseded.
    corpus=$({ grep -o 'corp: [0-9]*' "$log" || true; } | tail -1 | cut -d' ' -f2)
    line=$(printf '%-16s %12s execs %8s exec/s  corpus %6s  crashes %s  regressions failing %s' \
        "$t" "${execs:-?}" "${rate:-?}" "${corpus:-?}" "$crashes" "$regressed")
    summary+=("$line")
    if ((crashes)); then
        status=1
        grep -m1 -A1 'panicked at' "$log" | sed 's/^/    /' >&2 || true
        find "$fuzz/artifacts/$t" -type f -newer "$stamp" -printf "    input: fuzz/artifacts/$t/%P\n" >&2
        grep -m1 -A1 'panicked at' "$log" >/dev/null || tail -5 "$log" | sed 's/^/    /' >&2
    fi
    ((regressed)) && status=1
done

echo
printf '%s\n' "${summary[@]}"
echo "logs: fuzz/work/logs/; minimize a crash: RUSTC_BOOTSTRAP=1 cargo fuzz tmin -s none TARGET INPUT (in fuzz/)"
exit $status
