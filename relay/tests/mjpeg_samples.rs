//! The multipart parser on captures from real servers (tests/fixtures/mjpeg, copied from the
//! steering repo's shared/mjpeg-samples), split at every byte.

use scopecast_shared::multipart::{boundary_from_content_type, Event, MultipartParser, DEFAULT_MAX_PART};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../tests/fixtures/mjpeg/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn boundary_of(head: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(head);
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-type").then(|| boundary_from_content_type(value.trim()))?
    })
}

fn parse(boundary: Option<&str>, chunks: &[&[u8]]) -> Vec<(Vec<u8>, Option<f64>)> {
    let mut p = MultipartParser::new(boundary, DEFAULT_MAX_PART);
    let mut out = Vec::new();
    for c in chunks {
        p.push(c);
        while let Some(e) = p.next_event() {
            match e {
                Event::Jpeg(part) => out.push((part.jpeg.to_vec(), part.timestamp)),
                Event::Skipped(s) => panic!("unexpected skip {s:?}"),
            }
        }
    }
    out
}

/// (capture, expected part offsets and sizes from the capture's README)
fn samples() -> Vec<(&'static str, Vec<(usize, usize)>)> {
    vec![("ffmpeg-multipart", vec![(20962 - 20899 - 2, 20899), (0, 21019), (0, 21259), (0, 21560)]), ("ustreamer", vec![(0, 13845); 4])]
}

#[test]
fn every_sample_split_at_every_byte_yields_its_four_jpegs() {
    for (name, parts) in samples() {
        let body = fixture(&format!("{name}.body.bin"));
        let boundary = boundary_of(&fixture(&format!("{name}.head.txt")));
        assert!(boundary.is_some(), "{name}: boundary from the head");
        let whole = parse(boundary.as_deref(), &[&body]);
        assert_eq!(whole.len(), 4, "{name}: Content-Length parts end without waiting for the next boundary");
        for ((jpeg, _), (_, size)) in whole.iter().zip(&parts) {
            assert_eq!(jpeg.len(), *size, "{name}");
            assert!(jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]), "{name}: whole JPEG");
        }
        for split in 1..body.len() {
            let got = parse(boundary.as_deref(), &[&body[..split], &body[split..]]);
            assert!(got == whole, "{name}: split at {split} gave {} parts", got.len());
        }
        // Without the declared boundary (learnt from the stream) and one byte at a time.
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(parse(None, &bytes), whole, "{name}: byte by byte, boundary learnt");
    }
}

#[test]
fn ustreamer_timestamps_are_read() {
    let body = fixture("ustreamer.body.bin");
    let got = parse(Some("boundarydonotcross"), &[&body]);
    let ts: Vec<f64> = got.iter().map(|(_, t)| t.expect("X-Timestamp")).collect();
    assert!((ts[0] - 1795575705.705).abs() < 1e-3 && (ts[3] - 1795575708.233).abs() < 1e-3, "{ts:?}");
}

#[test]
fn captures_decode() {
    let mut dec = scopecast::media::jpeg::JpegDecoder::new().expect("turbojpeg");
    let mut pic = scopecast::media::I420::new(2, 2);
    for name in ["ffmpeg-multipart", "ustreamer"] {
        for (jpeg, _) in parse(None, &[&fixture(&format!("{name}.body.bin"))]) {
            dec.decode(&jpeg, 1, &mut pic).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((pic.width, pic.height), (640, 480), "{name}");
        }
    }
}
