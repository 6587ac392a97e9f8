#!/usr/bin/env bash
# Runs every test: installs what they need (scripts/setup-debian.sh test, scripts/setup-rust.sh,
# scripts/setup-whip-server.sh, scripts/setup-aiortc.sh, scripts/setup-geckodriver.sh),
# checks the architecture invariants (ARCHITECTURE.md), then `cargo test --release --workspace`
# (unit tests, end-to-end tests against real peers, headless Chromium). CI runs exactly this.
# Arguments go to cargo test: scripts/test.sh -p scopecast-tests --test browser
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh test
bash scripts/setup-rust.sh
bash scripts/setup-whip-server.sh
bash scripts/setup-aiortc.sh
bash scripts/setup-geckodriver.sh
bash scripts/check-invariants.sh
cargo test --release --workspace "$@"
