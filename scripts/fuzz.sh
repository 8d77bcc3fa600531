#!/usr/bin/env bash
# Builds and runs the cargo-fuzz targets in fuzz/ (RELIABILITY.md says what
# each one checks), one at a time, at the lowest CPU priority.
#
#   scripts/fuzz.sh smoke            every target for FUZZ_SMOKE_SECONDS (15) —
#                                    what scripts/test.sh runs in CI
#   scripts/fuzz.sh long [SECONDS]   every target for SECONDS (default 1800)
#   scripts/fuzz.sh run SECONDS T..  the named targets only
#   scripts/fuzz.sh list             the target names
#
# Needs the nightly toolchain (FUZZ_TOOLCHAIN, default nightly: the
# sanitizer flags) and cargo-fuzz; a
# missing cargo-fuzz is installed from crates.io. Without them the script
# says so and exits 0, except under CI=true, where that is a failure.
# Each target starts from its seeds in fuzz/corpus/<target> (read only) and
# keeps what it finds in $FUZZ_WORK/<target> (default target/fuzz-corpus).
# A crash leaves its input in fuzz/artifacts/<target>/ and makes the script
# exit 1 after all targets ran. One summary line per target:
#   fuzz: <target> runs=<executions> time=<s> exec/s=<n> cov=<edges> crashes=<n>
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

ci=false
[[ ${CI:-} == true ]] && ci=true

missing() {
    if $ci; then
        echo "scripts/fuzz.sh: FAIL: $1 (CI=true needs the fuzz smoke runs)" >&2
        exit 1
    fi
    echo "scripts/fuzz.sh: skipping the fuzz runs: $1" >&2
    exit 0
}

targets() {
    sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^dnsbgpd-fuzz$'
}

seed_args=()
mode=${1:-smoke}
shift || true
case $mode in
    list)
        targets
        exit 0
        ;;
    smoke)
        seconds=${FUZZ_SMOKE_SECONDS:-15}
        # A fixed seed: the smoke run in CI explores the same inputs each
        # time (a finding is reproducible, not luck of the run); the long
        # runs explore freely. FUZZ_SEED=0 lets libFuzzer pick one.
        seed_args=("-seed=${FUZZ_SEED:-1}")
        mapfile -t names < <(targets)
        ;;
    long)
        seconds=${1:-1800}
        mapfile -t names < <(targets)
        ;;
    run)
        seconds=${1:?usage: scripts/fuzz.sh run SECONDS TARGET...}
        shift
        names=("$@")
        ;;
    *)
        echo "usage: scripts/fuzz.sh smoke | long [SECONDS] | run SECONDS TARGET... | list" >&2
        exit 2
        ;;
esac

command -v rustup >/dev/null 2>&1 || missing "rustup is not installed"
toolchain=${FUZZ_TOOLCHAIN:-nightly}
rustup run "$toolchain" rustc --version >/dev/null 2>&1 ||
    missing "no $toolchain toolchain (rustup run $toolchain rustc fails); cargo-fuzz needs a nightly one for -Zsanitizer"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "scripts/fuzz.sh: installing cargo-fuzz from crates.io" >&2
    cargo install --locked cargo-fuzz >&2 || missing "cargo-fuzz is not installed and 'cargo install cargo-fuzz' failed"
fi

target_dir=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}/fuzz}
work=${FUZZ_WORK:-$root/target/fuzz-corpus}
mkdir -p "$work"
fuzz() { (cd fuzz && nice -n 19 rustup run "$toolchain" cargo fuzz "$@"); }

echo "scripts/fuzz.sh: building ${#names[@]} fuzz targets (nightly, address sanitizer)" >&2
start=$SECONDS
# Every target in one build (fuzz/Cargo.lock is committed beside the
# crate's own and starts from the same versions).
fuzz build --target-dir "$target_dir" >&2
echo "scripts/fuzz.sh: built in $((SECONDS - start)) s" >&2

failed=()
for t in "${names[@]}"; do
    mkdir -p "$work/$t" "$root/fuzz/corpus/$t"
    log="$work/$t.log"
    # -rss_limit_mb / -malloc_limit_mb: an input that makes a decoder allocate
    # without bound is a crash too. -timeout: one input may not take 10 s.
    # sync_merge keeps one change log (a temporary sled) across inputs, so
    # memory allocated by one input is freed by a later one; libFuzzer then
    # runs LeakSanitizer after nearly every input, ~80 % of its time
    # (perf), for leaks that are not leaks. Off for that target only.
    extra=()
    [[ $t == sync_merge ]] && extra=(-detect_leaks=0)
    status=0
    fuzz run --target-dir "$target_dir" "$t" "$work/$t" "$root/fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
        -print_final_stats=1 "${seed_args[@]}" "${extra[@]}" >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' "$log" | tail -1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    crashes=0
    if ((status != 0)); then
        crashes=1
        failed+=("$t")
        echo "scripts/fuzz.sh: $t FAILED (exit $status); the end of its log ($log):" >&2
        tail -40 "$log" >&2
    fi
    echo "fuzz: $t runs=${runs:-0} time=${secs:-$seconds} exec/s=${rate:-0} cov=${cov:-0} crashes=$crashes"
done

if ((${#failed[@]})); then
    echo "scripts/fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
