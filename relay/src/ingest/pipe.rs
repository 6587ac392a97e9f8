//! What a command's standard output holds, split into frames, with no I/O: push bytes in, pull
//! frames out. An `exec:` source may print
//! - MJPEG as multipart (`--boundary` parts, as FFmpeg's `-f mpjpeg` writes),
//! - JPEGs back to back (`rpicam-vid --codec mjpeg -o -`, `gphoto2 --capture-movie --stdout`),
//! - or H.264 in Annex B (`rpicam-vid --codec h264 -o -`, FFmpeg's `-f h264`).
//!
//! The kind is told from the first bytes. Back-to-back JPEGs are split by walking their
//! markers (segment lengths, then the entropy-coded data up to EOI), so an EXIF thumbnail's own
//! EOI inside APP1 does not end the picture early. H.264 is split into access units at an
//! access unit delimiter, parameter sets or SEI after a picture, or a slice that starts a new
//! picture (first_mb_in_slice = 0); a unit is complete when the next one begins, so H.264 from
//! a pipe arrives one frame late. Written by hand: no crate splits an endless pipe of either.

use bytes::{Buf, Bytes, BytesMut};
use scopecast_shared::multipart::{Event, MultipartParser};

/// A JPEG or an access unit larger than this is dropped (and the parser resynchronises).
pub const MAX_FRAME: usize = 32 << 20;

/// What a command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Multipart,
    Jpegs,
    H264,
}

impl Format {
    /// From the first bytes (at least 4 should be in); `None` while it cannot tell.
    pub fn detect(head: &[u8]) -> Option<Self> {
        let text = |s: &[u8]| head.windows(s.len()).take(256).any(|w| w.eq_ignore_ascii_case(s));
        if head.starts_with(&[0xFF, 0xD8]) {
            Some(Format::Jpegs)
        } else if head.starts_with(&[0, 0, 0, 1]) || head.starts_with(&[0, 0, 1]) {
            Some(Format::H264)
        } else if head.starts_with(b"--") || text(b"content-type") {
            Some(Format::Multipart)
        } else if head.len() >= 512 {
            // Junk before anything we know: multipart tolerates junk before its first part.
            Some(Format::Multipart)
        } else {
            None
        }
    }
}

/// One frame out of a pipe.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Jpeg(Bytes),
    /// An H.264 access unit in Annex B; `idr` when it holds an IDR slice.
    H264 {
        annexb: Bytes,
        idr: bool,
    },
    /// Bytes that were not a frame (too large, not a JPEG): counted, the stream goes on.
    Skipped(String),
}

/// Splits a pipe of any [`Format`], detected from its first bytes.
pub struct PipeParser {
    head: BytesMut,
    inner: Option<Inner>,
}

enum Inner {
    Multipart(MultipartParser),
    Jpegs(JpegSplitter),
    H264(AccessUnitSplitter),
}

impl Default for PipeParser {
    fn default() -> Self {
        Self { head: BytesMut::new(), inner: None }
    }
}

impl PipeParser {
    pub fn format(&self) -> Option<Format> {
        match self.inner {
            Some(Inner::Multipart(_)) => Some(Format::Multipart),
            Some(Inner::Jpegs(_)) => Some(Format::Jpegs),
            Some(Inner::H264(_)) => Some(Format::H264),
            None => None,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        match &mut self.inner {
            Some(Inner::Multipart(p)) => p.push(data),
            Some(Inner::Jpegs(p)) => p.push(data),
            Some(Inner::H264(p)) => p.push(data),
            None => {
                self.head.extend_from_slice(data);
                let Some(format) = Format::detect(&self.head) else { return };
                let head = std::mem::take(&mut self.head);
                self.inner = Some(match format {
                    Format::Multipart => Inner::Multipart(MultipartParser::new(None, MAX_FRAME)),
                    Format::Jpegs => Inner::Jpegs(JpegSplitter::default()),
                    Format::H264 => Inner::H264(AccessUnitSplitter::default()),
                });
                self.push(&head);
            }
        }
    }

    pub fn next_frame(&mut self) -> Option<Frame> {
        match self.inner.as_mut()? {
            Inner::Multipart(p) => p.next_event().map(|e| match e {
                Event::Jpeg(part) => Frame::Jpeg(part.jpeg),
                Event::Skipped(skip) => Frame::Skipped(format!("{skip:?}")),
            }),
            Inner::Jpegs(p) => p.next_frame(),
            Inner::H264(p) => p.next_frame(),
        }
    }

    /// The pipe closed: what is complete in the buffer.
    pub fn finish(&mut self) -> Option<Frame> {
        match self.inner.as_mut()? {
            Inner::Multipart(p) => p.finish().map(|e| match e {
                Event::Jpeg(part) => Frame::Jpeg(part.jpeg),
                Event::Skipped(skip) => Frame::Skipped(format!("{skip:?}")),
            }),
            Inner::Jpegs(_) => None,
            Inner::H264(p) => p.finish(),
        }
    }
}

/// Back-to-back JPEGs, split by their markers.
#[derive(Default)]
pub struct JpegSplitter {
    buf: BytesMut,
    /// Where the scan stopped in the current JPEG, so bytes are looked at once.
    pos: usize,
    /// Inside entropy-coded data (after SOS).
    in_scan: bool,
}

impl JpegSplitter {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.pos == 0 {
                // Resynchronise on an SOI.
                match memchr::memmem::find(&self.buf, &[0xFF, 0xD8]) {
                    Some(0) => self.pos = 2,
                    Some(at) => {
                        self.buf.advance(at);
                        return Some(Frame::Skipped(format!("{at} bytes before a JPEG")));
                    }
                    None => {
                        let keep = usize::from(self.buf.last() == Some(&0xFF));
                        let junk = self.buf.len() - keep;
                        self.buf.advance(junk);
                        return (junk > 0).then(|| Frame::Skipped(format!("{junk} bytes that are not JPEG")));
                    }
                }
            }
            if self.buf.len() > MAX_FRAME {
                let size = self.buf.len();
                self.buf.clear();
                (self.pos, self.in_scan) = (0, false);
                return Some(Frame::Skipped(format!("a JPEG over {size} bytes")));
            }
            match self.step()? {
                Some(end) => {
                    let jpeg = self.buf.split_to(end).freeze();
                    (self.pos, self.in_scan) = (0, false);
                    return Some(Frame::Jpeg(jpeg));
                }
                None => continue,
            }
        }
    }

    /// Advances through markers; `Some(Some(end))` at EOI, `Some(None)` after progress that
    /// needs another look, `None` when more bytes are needed.
    fn step(&mut self) -> Option<Option<usize>> {
        let b = &self.buf;
        if self.in_scan {
            // Entropy-coded data: FF 00 is a stuffed byte, FF D0-D7 a restart marker.
            let mut i = self.pos;
            while let Some(off) = memchr::memchr(0xFF, &b[i..]) {
                let at = i + off;
                let &next = b.get(at + 1)?;
                match next {
                    0x00 | 0xD0..=0xD7 | 0xFF => i = at + 1,
                    0xD9 => return Some(Some(at + 2)),
                    _ => {
                        // Another marker (a progressive JPEG's next table or scan).
                        self.in_scan = false;
                        self.pos = at;
                        return Some(None);
                    }
                }
            }
            self.pos = b.len();
            return None;
        }
        let (&ff, &marker) = (b.get(self.pos)?, b.get(self.pos + 1)?);
        if ff != 0xFF {
            // Not a marker where one must be: drop this start and look for the next SOI.
            self.buf.advance(2);
            (self.pos, self.in_scan) = (0, false);
            return Some(None);
        }
        match marker {
            0xFF => self.pos += 1, // fill byte
            0xD9 => return Some(Some(self.pos + 2)),
            0xD0..=0xD7 | 0x01 => self.pos += 2,
            _ => {
                let len = usize::from(u16::from_be_bytes([*b.get(self.pos + 2)?, *b.get(self.pos + 3)?]));
                if self.pos + 2 + len > b.len() {
                    return None;
                }
                self.pos += 2 + len;
                self.in_scan = marker == 0xDA;
            }
        }
        Some(None)
    }
}

/// H.264 Annex B from a pipe, split into access units.
#[derive(Default)]
pub struct AccessUnitSplitter {
    buf: BytesMut,
    /// Complete NAL units of the unit being gathered (start codes included), and whether one
    /// of them is a picture's slice.
    unit: BytesMut,
    unit_has_slice: bool,
    unit_idr: bool,
    ready: std::collections::VecDeque<Frame>,
    /// Where to look for the next start code in `buf`.
    scanned: usize,
}

impl AccessUnitSplitter {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        // Every NAL unit that the next start code completes.
        while let Some(first) = memchr::memmem::find(&self.buf, &[0, 0, 1]) {
            let from = (first + 3).max(self.scanned);
            let Some(next) = memchr::memmem::find(&self.buf[from..], &[0, 0, 1]).map(|i| from + i) else {
                self.scanned = self.buf.len().saturating_sub(2);
                if self.buf.len() > MAX_FRAME {
                    self.buf.clear();
                    self.scanned = 0;
                    self.ready.push_back(Frame::Skipped("an H.264 NAL unit over the size cap".to_owned()));
                }
                break;
            };
            // A 4-byte start code's leading zero belongs to the next unit.
            let end = if next > 0 && self.buf[next - 1] == 0 { next - 1 } else { next };
            let nal = self.buf.split_to(end).freeze();
            self.scanned = 0;
            let body = &nal[first + 3..];
            self.nal(body);
        }
    }

    fn nal(&mut self, body: &[u8]) {
        let Some(&header) = body.first() else { return };
        let kind = header & 0x1f;
        let slice = matches!(kind, 1 | 5);
        // first_mb_in_slice = 0 is ue(v) '1': the first bit after the header.
        let new_picture = slice && body.get(1).is_some_and(|b| b & 0x80 != 0);
        let starts_unit = self.unit_has_slice && (matches!(kind, 6..=9) || new_picture);
        if starts_unit {
            self.flush();
        }
        if self.unit.len() + body.len() > MAX_FRAME {
            self.unit.clear();
            (self.unit_has_slice, self.unit_idr) = (false, false);
            self.ready.push_back(Frame::Skipped("an H.264 access unit over the size cap".to_owned()));
            return;
        }
        self.unit.extend_from_slice(&[0, 0, 0, 1]);
        self.unit.extend_from_slice(body);
        self.unit_has_slice |= slice;
        self.unit_idr |= kind == 5;
    }

    fn flush(&mut self) {
        if self.unit_has_slice {
            let annexb = std::mem::take(&mut self.unit).freeze();
            self.ready.push_back(Frame::H264 { annexb, idr: self.unit_idr });
        }
        self.unit.clear();
        (self.unit_has_slice, self.unit_idr) = (false, false);
    }

    pub fn next_frame(&mut self) -> Option<Frame> {
        self.ready.pop_front()
    }

    /// The pipe closed: its last NAL unit and access unit are complete.
    pub fn finish(&mut self) -> Option<Frame> {
        if let Some(first) = memchr::memmem::find(&self.buf, &[0, 0, 1]) {
            let rest = self.buf.split_off(first + 3).freeze();
            self.buf.clear();
            self.nal(&rest);
        }
        self.flush();
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny but well-formed JPEG with an EXIF thumbnail (whose own SOI/EOI sit in APP1), a
    /// stuffed FF 00, a restart marker, and progressive-style second scan.
    fn jpeg(id: u8) -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        let thumb = [0xFF, 0xD8, 0xFF, 0xD9, id];
        j.extend_from_slice(&[0xFF, 0xE1, 0, (2 + thumb.len()) as u8]);
        j.extend_from_slice(&thumb);
        j.extend_from_slice(&[0xFF, 0xDA, 0, 3, 1]);
        j.extend_from_slice(&[id, 0xFF, 0x00, 7, 0xFF, 0xD3, 9]);
        j.extend_from_slice(&[0xFF, 0xC4, 0, 3, 2]);
        j.extend_from_slice(&[0xFF, 0xDA, 0, 3, 1, 5, 6]);
        j.extend_from_slice(&[0xFF, 0xD9]);
        j
    }

    fn all(p: &mut PipeParser) -> Vec<Frame> {
        std::iter::from_fn(|| p.next_frame()).collect()
    }

    #[test]
    fn back_to_back_jpegs_split_whole_whatever_the_chunking() {
        let stream: Vec<u8> = [jpeg(1), jpeg(2), jpeg(3)].concat();
        for chunk in [1, 3, 7, stream.len()] {
            let mut p = PipeParser::default();
            let mut frames = Vec::new();
            for c in stream.chunks(chunk) {
                p.push(c);
                frames.extend(all(&mut p));
            }
            assert_eq!(p.format(), Some(Format::Jpegs));
            let jpegs: Vec<Vec<u8>> = frames.into_iter().filter_map(|f| if let Frame::Jpeg(j) = f { Some(j.to_vec()) } else { None }).collect();
            assert_eq!(jpegs, vec![jpeg(1), jpeg(2), jpeg(3)], "chunks of {chunk}");
        }
    }

    #[test]
    fn junk_between_jpegs_is_skipped_and_reported() {
        let mut splitter = JpegSplitter::default();
        splitter.push(&[jpeg(1), b"garbage!".to_vec(), jpeg(2)].concat());
        let frames: Vec<Frame> = std::iter::from_fn(|| splitter.next_frame()).collect();
        assert!(matches!(&frames[..], [Frame::Jpeg(_), Frame::Skipped(_), Frame::Jpeg(b)] if b.to_vec() == jpeg(2)), "{frames:?}");
    }

    fn nal(kind: u8, first_mb_zero: bool) -> Vec<u8> {
        vec![0, 0, 0, 1, 0x60 | kind, if first_mb_zero { 0x88 } else { 0x48 }, 0x11, 0x22]
    }

    #[test]
    fn h264_splits_into_access_units_at_new_pictures_and_parameter_sets() {
        // IDR unit: SPS, PPS, two slices of one picture; then a P picture; then AUD + P.
        let stream = [nal(7, true), nal(8, true), nal(5, true), nal(5, false), nal(1, true), nal(9, true), nal(1, true)].concat();
        for chunk in [1, 5, stream.len()] {
            let mut p = PipeParser::default();
            let mut frames = Vec::new();
            for c in stream.chunks(chunk) {
                p.push(c);
                frames.extend(all(&mut p));
            }
            frames.extend(std::iter::from_fn(|| p.finish()));
            let units: Vec<(usize, bool)> = frames
                .iter()
                .filter_map(|f| if let Frame::H264 { annexb, idr } = f { Some((crate::media::encoder::nal_units(annexb).count(), *idr)) } else { None })
                .collect();
            assert_eq!(units, [(4, true), (1, false), (2, false)], "chunks of {chunk}");
        }
    }

    #[test]
    fn formats_are_told_from_the_first_bytes() {
        assert_eq!(Format::detect(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Format::Jpegs));
        assert_eq!(Format::detect(&[0, 0, 0, 1, 0x67]), Some(Format::H264));
        assert_eq!(Format::detect(b"--ffmpeg\r\nContent-Type: image/jpeg"), Some(Format::Multipart));
        assert_eq!(Format::detect(b"ab"), None);
    }
}
