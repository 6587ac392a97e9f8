#!/usr/bin/env bash
# geckodriver, which drives Firefox in the VP8 browser test (tests/tests/firefox.rs), built
# from crates.io: Debian has no package, and its release binaries would be a download.
# scripts/test.sh calls it; about 3 CPU-minutes once, then nothing.
set -euo pipefail
if ! command -v geckodriver >/dev/null; then
  cargo install geckodriver --locked
fi
echo "setup: $(geckodriver --version | head -1)" >&2
