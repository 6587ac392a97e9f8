//! The trickle-ICE fragment parser (WHEP PATCH bodies) on arbitrary text; a fragment it
//! accepts holds only well-formed candidates.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(frag) = scopecast_shared::sdp::parse_fragment(text) {
            for c in &frag.candidates {
                assert!(c.starts_with("candidate:"));
            }
        }
    }
});
