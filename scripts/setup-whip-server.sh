#!/usr/bin/env bash
# Unpacks simple-whip-server (Janus's WHIP front end, a Debian package) and its Node modules into
# target/third-party/simple-whip-server, for the WHIP publish tests (tests/src/janus.rs).
# It is unpacked rather than installed: the package depends on Debian's nodejs, which conflicts
# with the NodeSource Node.js some machines have. Janus itself comes from scripts/setup-debian.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/third-party/simple-whip-server
[ -f "$dest/src/server.js" ] && [ -d "$dest/node_modules/express" ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v npm >/dev/null; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nodejs npm
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt-get download writes into the current directory, as the _apt user when it can.
chmod 777 "$work"
(cd "$work" && apt-get download -q simple-whip-server >/dev/null)
dpkg-deb -x "$work"/simple-whip-server_*.deb "$work/root"
rm -rf "$dest" && mkdir -p "$dest"
cp -r "$work/root/usr/share/simple-whip-server/src" "$dest/"
rm -f "$dest/src/config.js"   # a link to /etc; the tests write their own
# Express 4: the server uses its 4.x API (body-parser, res.writeHeader).
(cd "$dest" && npm init -y >/dev/null && npm install --no-audit --no-fund --silent express@4 cors debug colors websocket async)
echo "setup: simple-whip-server in $dest" >&2
