#!/usr/bin/env bash
# The Rust side of setup (as the user who builds, not root): the wasm32 target the player
# (client/) is compiled for; relay/build.rs builds it. scripts/run.sh and scripts/test.sh call it.
set -euo pipefail
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
echo "setup: $(rustc --version), wasm32-unknown-unknown installed" >&2
