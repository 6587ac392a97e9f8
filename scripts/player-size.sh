#!/usr/bin/env bash
# The player's download size, raw, gzip -9 and as served, from the newest relay build's OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(ls -td target/*/build/scopecast-*/out/player 2>/dev/null | head -1)
[ -n "$dir" ] || { echo "no player build: run cargo build --release -p scopecast first" >&2; exit 1; }
{
  for p in "$dir/scopecast_client_bg.wasm" "$dir/scopecast_client.js" static/scopecast-player.js static/player.css; do
    gz=$(gzip -9c "$p" | wc -c)
    # The player is served as build.rs gzipped it (zopfli); the rest gzipped at the best level.
    served=$gz; [ -f "$p.gz" ] && served=$(stat -c %s "$p.gz")
    echo "$(basename "$p") $(stat -c %s "$p") $gz $served"
  done
} | awk 'BEGIN { print "| file | raw KB | gzip -9 KB | served gzipped KB |"; print "| --- | --- | --- | --- |" }
         { printf "| %s | %.1f | %.1f | %.1f |\n", $1, $2 / 1024, $3 / 1024, $4 / 1024; raw += $2; gz += $3; served += $4 }
         END { printf "| **total** | %.1f | %.1f | %.1f |\n", raw / 1024, gz / 1024, served / 1024 }'
