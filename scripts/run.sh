#!/usr/bin/env bash
# Runs the relay with its built-in test pattern and the player: open http://127.0.0.1:8889/.
# Installs what building needs first (scripts/setup-debian.sh build, scripts/setup-rust.sh).
# Arguments go to the relay: scripts/run.sh --stream sky=test:deepsky --http 0.0.0.0:8889
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh build
bash scripts/setup-rust.sh
exec cargo run --release -p scopecast -- "$@"
