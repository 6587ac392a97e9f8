#!/usr/bin/env bash
# Makes a virtualenv with aiortc (from PyPI) in target/third-party/aiortc, for the WHIP ingest
# tests' second publisher (tests/fixtures/whip_aiortc.py). Debian's python3 makes it
# (python3-venv: scripts/setup-debian.sh test); PyAV's wheel brings libx264 for aiortc's H.264.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/third-party/aiortc
version=1.16.0
[ -x "$dest/bin/python" ] && "$dest/bin/python" -c "import aiortc, sys; sys.exit(aiortc.__version__ != '$version')" 2>/dev/null && exit 0
rm -rf "$dest"
/usr/bin/python3 -m venv "$dest"
"$dest/bin/pip" install -q --disable-pip-version-check "aiortc==$version"
echo "setup: aiortc $version in $dest" >&2
