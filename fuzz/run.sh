#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on the stable toolchain
# (the same LLVM passes cargo-fuzz enables; no sanitizer, which needs nightly) and runs each
# for a bounded time. Usage: fuzz/run.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/meridian-fuzz-target}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts (they must not be instrumented).
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked --bins --target "$host"
for target in batch_decode record_parse mirror_frame kafka_request mqtt_packet sasl_scram; do
  corpus="$CARGO_TARGET_DIR/corpus/$target"
  mkdir -p "$corpus"
  echo "==> fuzzing $target for ${seconds}s"
  "$CARGO_TARGET_DIR/$host/release/$target" -max_total_time="$seconds" -print_final_stats=1 "$corpus" 2>&1 | tail -4
done
