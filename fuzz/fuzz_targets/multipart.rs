//! The MJPEG multipart parser on arbitrary camera bytes, fed in arbitrary chunk sizes: no
//! panic, memory bounded by the part cap, and every JPEG it hands out starts with SOI.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scopecast_shared::multipart::{Event, MultipartParser};

const CAP: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // First byte: the chunk size; second: whether the boundary is known from the header.
    let (Some(&chunk), Some(&known)) = (data.first(), data.get(1)) else { return };
    let body = &data[2..];
    let mut parser = MultipartParser::new((known & 1 == 1).then_some("b"), CAP);
    for piece in body.chunks(usize::from(chunk).max(1)) {
        parser.push(piece);
        while let Some(event) = parser.next_event() {
            if let Event::Jpeg(part) = event {
                assert!(part.jpeg.starts_with(&[0xff, 0xd8]), "a JPEG starts with SOI");
                assert!(part.jpeg.len() <= CAP, "no part over the cap");
            }
        }
        // Buffered bytes stay bounded: a part's cap plus a boundary's and a header block's worth.
        assert!(parser.buffered() <= CAP + 16 * 1024 + usize::from(chunk), "buffered {}", parser.buffered());
    }
    while parser.finish().is_some() {}
});
