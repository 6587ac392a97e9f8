//! What the player parses from a (possibly hostile) server: Link, Retry-After, Location, SDP
//! fragments. No panic, and Retry-After never exceeds what the backoff honours.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scopecast_client::{backoff, headers, sdpfrag};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = headers::ice_servers([text]);
    if let Some(ms) = headers::retry_after_ms(text, 1_800_000_000_000) {
        let d = backoff::Backoff::WHEP.delay_ms(3, 0.5, Some(ms));
        assert!(d <= backoff::MAX_RETRY_AFTER_MS.max(backoff::Backoff::WHEP.cap_ms));
    }
    let _ = headers::resolve("http://relay:8889/telescope/whep", text);
    let _ = headers::StreamUrls::from_src(text);
    let _ = headers::StreamUrls::for_whep(text);
    let _ = sdpfrag::apply_restart("v=0\r\na=ice-ufrag:a\r\na=ice-pwd:b\r\na=mid:0\r\n", text);
});
