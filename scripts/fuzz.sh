#!/usr/bin/env bash
# The fuzz targets (fuzz/README.md): replays the seed corpus and every
# crash ever found (cargo test), then runs each target under AFL++ (cargo
# afl, stable toolchain) for SECONDS from its corpus. A crash fails the
# run; it is copied to fuzz/regressions/TARGET/ to be fixed and committed.
#
#   fuzz.sh [SECONDS per target, default 12] [TARGET...]
set -euo pipefail
secs="${1:-12}"; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(chunk amf0 flv template plugin_output)
cd "$(dirname "$0")/../fuzz"
export CARGO_TARGET_DIR="${EDGESNAP_FUZZ_TARGET:-$HOME/.cache/edgesnap/fuzz-target}"
cargo test --locked --quiet
cargo afl build --release --locked --features afl --quiet
out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT
failed=0
for t in "${targets[@]}"; do
  AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 \
    timeout "$((secs + 60))" cargo afl fuzz -V "$secs" -i "corpus/$t" -o "$out/$t" "$CARGO_TARGET_DIR/release/$t" \
    >"$out/$t.log" 2>&1 || { echo "fuzz $t: afl-fuzz failed"; tail -20 "$out/$t.log"; exit 1; }
  stats="$out/$t/default/fuzzer_stats"
  execs=$(awk -F': ' '/^execs_done/ {print $2}' "$stats")
  cover=$(awk -F': ' '/^bitmap_cvg/ {print $2}' "$stats")
  crashes=("$out/$t/default/crashes"/id:*)
  if [ -e "${crashes[0]}" ]; then
    mkdir -p "regressions/$t"
    for c in "${crashes[@]}"; do cp "$c" "regressions/$t/crash-$(sha256sum "$c" | cut -c1-12)"; done
    echo "fuzz $t: ${#crashes[@]} crashes in $execs runs, copied to fuzz/regressions/$t/"
    failed=1
  else
    echo "fuzz $t: $execs runs in ${secs} s, coverage $cover, no crash"
  fi
done
exit "$failed"
