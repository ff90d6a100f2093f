#!/usr/bin/env bash
# Fuzzes kite's parsers of outside input with cargo fuzz (libFuzzer), each
# target for a bounded time: FUZZ_SECONDS (default 60) per target.
#   scripts/fuzz.sh                 # every target
#   scripts/fuzz.sh port_map        # one target
# Needs a nightly toolchain (cargo fuzz builds with sanitizers); installs
# cargo-fuzz from crates.io when it is missing. A crash fails the script and
# leaves its input under fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
for t in "${targets[@]}"; do
    echo "== fuzzing $t for ${seconds}s"
    mkdir -p "fuzz/corpus/$t"
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$seconds" -max_len=4096
done
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash"
