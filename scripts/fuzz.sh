#!/usr/bin/env bash
# Fuzzes what players and cameras send, each target for SECONDS (default 60):
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: multipart sdp_offer trickle_fragment player_headers
# Prints executions and findings per target (HARDENING.md records runs). A crash leaves its input
# in fuzz/artifacts/TARGET/ and fails the script; keep it as a regression test once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
secs=${1:-60}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(multipart sdp_offer trickle_fragment player_headers)
# cargo-fuzz builds with -Zsanitizer=address; the stable toolchain ships the ASan runtime, and
# RUSTC_BOOTSTRAP lets it take the flag (no nightly toolchain can be installed here).
export RUSTC_BOOTSTRAP=1
mkdir -p target/fuzz-logs
cd fuzz
cargo fuzz build --release 2>&1 | tail -1
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="../target/fuzz-logs/$t.log"
  if cargo fuzz run --release "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 > "$log" 2>&1; then
    result="no findings"
  else
    result="FINDING (see fuzz/artifacts/$t/ and $log)"; status=1
  fi
  runs=$(grep -E "^stat::number_of_executed_units" "$log" | awk '{print $2}')
  cov=$(grep -E "^#[0-9]+" "$log" | tail -1 | grep -oE "cov: [0-9]+" || true)
  echo "$t: ${runs:-?} executions in ${secs} s, ${cov:-cov: ?}, corpus $(ls "corpus/$t" | wc -l) inputs: $result"
done
exit $status
