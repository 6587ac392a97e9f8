//! The WHEP offer check on arbitrary text: the SDP parser (webrtc-sdp) and our H.264 checks
//! answer Ok or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = scopecast_shared::sdp::check_offer(text);
    }
});
