#!/usr/bin/env bash
# Architecture invariants from ARCHITECTURE.md, checked mechanically.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "invariant broken: $*" >&2; exit 1; }

# shared/ is wire types only: no async runtime, no browser bindings, and it builds for wasm32.
if cargo tree -p scopecast-shared -e normal --prefix none | grep -Eq '^(tokio|web-sys|js-sys|axum|webrtc) '; then
  fail "scopecast-shared depends on a runtime or browser crate"
fi
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
cargo build -q -p scopecast-shared --target wasm32-unknown-unknown

# Media and ingest code knows nothing of HTTP serving or WebRTC.
# (An external path: `webrtc::`, not our own `crate::webrtc::`.)
if grep -rEn '(^|[^:[:alnum:]_])(axum|webrtc)::' relay/src/media relay/src/ingest; then
  fail "relay/src/media or relay/src/ingest uses axum or webrtc"
fi
# Every use of the webrtc crate stays behind the seam (relay/src/webrtc) or in the pipeline's RTP packetizer.
if grep -rlE '(^|[^:[:alnum:]_])webrtc::' relay/src | grep -Ev '^relay/src/(webrtc/|pipeline\.rs)'; then
  fail "webrtc crate used outside relay/src/webrtc and relay/src/pipeline.rs"
fi
# The rendition policy is pure: events and time in, a choice out.
if grep -En '(tokio|webrtc|axum)::' relay/src/adapt.rs; then
  fail "relay/src/adapt.rs uses tokio, webrtc or axum"
fi
# So is the judge of a viewer's probes: packet types in, a rate out.
if grep -En '(tokio|axum)::' relay/src/webrtc/twcc.rs; then
  fail "relay/src/webrtc/twcc.rs uses tokio or axum"
fi
# The MSE rung's muxer is pure: Annex B in, MP4 bytes out.
if grep -En '(tokio|axum|std::(net|fs|io::Write))' relay/src/media/fmp4.rs; then
  fail "relay/src/media/fmp4.rs does I/O"
fi
# The player's logic (client/src/*.rs) is plain Rust tested natively; only client/src/web/
# touches the browser.
if grep -lE '(web_sys|js_sys|wasm_bindgen|leptos)' client/src/*.rs | grep -v '^client/src/lib.rs$'; then
  fail "client logic outside client/src/web uses browser crates"
fi
echo "invariants hold"
