#!/usr/bin/env bash
# Refreshes docs/screenshots/ (README shows them) from the browser tests, which save what they
# see under target/screenshots/. Run it when the player's look changes, and commit the result.
#   scripts/screenshots.sh            runs the browser tests, then copies
#   scripts/screenshots.sh --no-run   copies what the last test run left
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" != "--no-run" ]; then
  scripts/test.sh -p scopecast-tests --test browser --test player --test telescope
fi
shopt -s nullglob
shots=(target/screenshots/*.png)
[ ${#shots[@]} -gt 0 ] || { echo "no screenshots under target/screenshots" >&2; exit 1; }
mkdir -p docs/screenshots
cp -v "${shots[@]}" docs/screenshots/
