#!/bin/sh
# Stands in for cmake during cargo builds (.cargo/config.toml): runs the real one, or says in
# one line what to run when it is missing (a first `cargo build` on a fresh machine).
if command -v cmake >/dev/null 2>&1; then exec cmake "$@"; fi
echo "scopecast: cmake and nasm are needed to build: run scripts/run.sh or scripts/test.sh (they install them), or: sudo apt-get install cmake nasm pkg-config" >&2
exit 1
