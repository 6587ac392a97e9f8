//! Sans-IO parser for `multipart/x-mixed-replace` MJPEG bodies: push bytes in, pull JPEGs out.
//!
//! Real servers differ (see `shared/mjpeg-samples/`): the boundary line may or may not carry the
//! leading `--`, the declared boundary may or may not include it, parts come with or without
//! `Content-Length`, lines end in CRLF or LF, parts carry extra headers, and junk may precede the
//! first part. The parser accepts all of these. It never buffers more than `max_part` bytes of
//! one part: a larger part is skipped (streamed past when its length is declared) and reported.
//!
//! Written by hand because no maintained crate parses *endless* multipart streams incrementally
//! with a per-part cap: `multer` and friends target finite `multipart/form-data` uploads.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;

/// Default cap on one part (16 MiB).
pub const DEFAULT_MAX_PART: usize = 16 * 1024 * 1024;

/// Longest boundary token learnt from the stream (RFC 2046 allows 70).
const MAX_TOKEN: usize = 200;

/// Cap on one part's header block; longer is treated as junk and resynchronised.
const MAX_HEADER_BLOCK: usize = 8 * 1024;

/// What the parser produces.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A complete JPEG.
    Jpeg(Part),
    /// A part that was dropped, and why. The stream goes on.
    Skipped(Skip),
}

/// A JPEG and the part headers that matter.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub jpeg: Bytes,
    /// `X-Timestamp` (Unix seconds) when the server sent one, as mjpg-streamer and µStreamer do.
    pub timestamp: Option<f64>,
}

/// Why a part was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The part was larger than the cap; `size` is its declared or observed size.
    TooLarge { size: usize },
    /// The part did not hold a JPEG (no SOI marker).
    NotJpeg { size: usize },
    /// The part's header block was unreadable or too long.
    BadHeaders,
}

#[derive(Debug)]
enum State {
    /// Looking for a boundary line; everything before it is junk.
    SeekBoundary,
    /// After a boundary line, reading header lines up to the empty line.
    Headers,
    /// Reading a body of known length.
    Body { len: usize, timestamp: Option<f64> },
    /// Reading a body that ends at the next boundary.
    BodyUntilBoundary { timestamp: Option<f64>, scanned: usize },
    /// Discarding the rest of an oversized part of known length.
    Discard { remaining: usize },
    /// Discarding an oversized part of unknown length up to the next boundary.
    DiscardUntilBoundary { size: usize },
}

/// The parser. Feed it with [`MultipartParser::push`], drain it with [`MultipartParser::next_event`].
#[derive(Debug)]
pub struct MultipartParser {
    /// The boundary token without leading dashes; learnt from the first `--` line if unknown.
    token: Option<Vec<u8>>,
    buf: BytesMut,
    state: State,
    max_part: usize,
}

impl MultipartParser {
    /// `boundary` is the `boundary=` parameter of the response's Content-Type, if any.
    pub fn new(boundary: Option<&str>, max_part: usize) -> Self {
        let token = boundary.map(|b| b.trim().trim_matches('"').trim_start_matches('-')).filter(|b| !b.is_empty()).map(|b| b.as_bytes().to_vec());
        Self { token, buf: BytesMut::new(), state: State::SeekBoundary, max_part }
    }

    /// Appends bytes from the network.
    pub fn push(&mut self, data: &[u8]) {
        match &mut self.state {
            // Don't copy bytes that would only be thrown away.
            State::Discard { remaining } if self.buf.is_empty() => {
                let n = (*remaining).min(data.len());
                *remaining -= n;
                self.buf.extend_from_slice(&data[n..]);
                if *remaining == 0 {
                    self.state = State::SeekBoundary;
                }
            }
            _ => self.buf.extend_from_slice(data),
        }
    }

    /// Bytes held right now (bounded by the part cap plus one network read).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next JPEG or skipped part, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            match std::mem::replace(&mut self.state, State::SeekBoundary) {
                State::SeekBoundary => {
                    if !self.seek_boundary() {
                        return None;
                    }
                    self.state = State::Headers;
                }
                State::Headers => match self.read_headers() {
                    HeaderResult::NeedMore => {
                        self.state = State::Headers;
                        return None;
                    }
                    HeaderResult::Bad => return Some(Event::Skipped(Skip::BadHeaders)),
                    HeaderResult::Done { len: Some(len), .. } if len > self.max_part => {
                        self.state = State::Discard { remaining: len };
                        let event = Event::Skipped(Skip::TooLarge { size: len });
                        self.discard_buffered();
                        return Some(event);
                    }
                    HeaderResult::Done { len: Some(len), timestamp } => {
                        self.state = State::Body { len, timestamp };
                    }
                    HeaderResult::Done { len: None, timestamp } => {
                        self.state = State::BodyUntilBoundary { timestamp, scanned: 0 };
                    }
                },
                State::Body { len, timestamp } => {
                    if self.buf.len() < len {
                        self.state = State::Body { len, timestamp };
                        return None;
                    }
                    let body = self.buf.split_to(len).freeze();
                    return Some(jpeg_event(body, timestamp));
                }
                State::BodyUntilBoundary { timestamp, scanned } => match self.find_boundary_line(scanned) {
                    Some(at) => {
                        let body = self.buf.split_to(at).freeze();
                        return Some(jpeg_event(trim_line_end(body), timestamp));
                    }
                    None if self.buf.len() > self.max_part => {
                        let size = self.buf.len();
                        self.keep_tail_for_boundary();
                        self.state = State::DiscardUntilBoundary { size };
                    }
                    None => {
                        let scanned = self.rescan_from();
                        self.state = State::BodyUntilBoundary { timestamp, scanned };
                        return None;
                    }
                },
                State::Discard { remaining } => {
                    let n = remaining.min(self.buf.len());
                    self.buf.advance(n);
                    if remaining > n {
                        self.state = State::Discard { remaining: remaining - n };
                        return None;
                    }
                }
                State::DiscardUntilBoundary { size } => match self.find_boundary_line(0) {
                    Some(at) => {
                        self.buf.advance(at);
                        return Some(Event::Skipped(Skip::TooLarge { size: size + at }));
                    }
                    None => {
                        let dropped = self.keep_tail_for_boundary();
                        self.state = State::DiscardUntilBoundary { size: size + dropped };
                        return None;
                    }
                },
            }
        }
    }

    /// At end of stream: a part without Content-Length ends with the connection.
    pub fn finish(&mut self) -> Option<Event> {
        if let Some(event) = self.next_event() {
            return Some(event);
        }
        match std::mem::replace(&mut self.state, State::SeekBoundary) {
            State::BodyUntilBoundary { timestamp, .. } if !self.buf.is_empty() => {
                let body = self.buf.split().freeze();
                Some(jpeg_event(trim_line_end(body), timestamp))
            }
            _ => None,
        }
    }

    /// Where a resumed boundary search may start: far enough back that a boundary split across
    /// two pushes is still found.
    fn rescan_from(&self) -> usize {
        let guard = self.token.as_ref().map_or(0, |t| t.len()) + 4;
        self.buf.len().saturating_sub(guard)
    }

    fn discard_buffered(&mut self) {
        if let State::Discard { remaining } = &mut self.state {
            let n = (*remaining).min(self.buf.len());
            self.buf.advance(n);
            *remaining -= n;
            if *remaining == 0 {
                self.state = State::SeekBoundary;
            }
        }
    }

    /// Drops all but the last few bytes (a boundary may straddle the cut); returns bytes dropped.
    fn keep_tail_for_boundary(&mut self) -> usize {
        let keep = self.buf.len() - self.rescan_from();
        let drop = self.buf.len() - keep;
        self.buf.advance(drop);
        drop
    }

    /// Finds a boundary line and consumes through its line end. Learns the token if unknown.
    fn seek_boundary(&mut self) -> bool {
        if self.token.is_none() && !self.learn_token() {
            return false;
        }
        match self.find_boundary_line(0) {
            Some(at) => {
                let Some(line_len) = line_length(&self.buf[at..]) else {
                    // The boundary line is not complete yet.
                    self.buf.advance(at);
                    return false;
                };
                self.buf.advance(at + line_len);
                true
            }
            None => {
                // Junk: keep only what could be the start of a boundary.
                self.keep_tail_for_boundary();
                false
            }
        }
    }

    /// Without a declared boundary, the first line that starts with `--` names it.
    fn learn_token(&mut self) -> bool {
        let mut start = 0;
        while let Some(len) = line_length(&self.buf[start..]) {
            let line = trim_eol(&self.buf[start..start + len]);
            if let Some(token) = line.strip_prefix(b"--") {
                let token = token.strip_suffix(b"--").unwrap_or(token);
                if !token.is_empty() && token.len() <= MAX_TOKEN {
                    self.token = Some(token.to_vec());
                    self.buf.advance(start);
                    return true;
                }
            }
            start += len;
        }
        // Complete lines without a boundary are junk; an unfinished line longer than any
        // boundary line is junk too.
        self.buf.advance(start);
        if self.buf.len() > MAX_TOKEN + 4 {
            self.buf.clear();
        }
        false
    }

    /// Offset of the start of a boundary line (its first `-` or token byte) at or after `from`.
    /// A boundary line is the token, optionally preceded by `--`, at the start of a line.
    fn find_boundary_line(&self, from: usize) -> Option<usize> {
        let token = self.token.as_deref()?;
        let finder = memmem::Finder::new(token);
        let mut pos = from;
        while let Some(rel) = finder.find(&self.buf[pos..]) {
            let hit = pos + rel;
            let start = if hit >= 2 && &self.buf[hit - 2..hit] == b"--" { hit - 2 } else { hit };
            let at_line_start = start == 0 || self.buf[start - 1] == b'\n';
            let after = &self.buf[hit + token.len()..];
            if at_line_start {
                // The token must end its line (or be the closing `--token--`), so that JPEG
                // bytes which happen to contain it after a 0x0A are not taken for a boundary.
                if after.len() < 2 {
                    return None; // Undecided until more bytes come; the rescan guard keeps these.
                }
                if after.starts_with(b"\r\n") || after.starts_with(b"\n") || after.starts_with(b"--") || after[0] == b' ' || after[0] == b'\t' {
                    return Some(start);
                }
            }
            pos = hit + 1;
        }
        None
    }

    fn read_headers(&mut self) -> HeaderResult {
        let mut pos = 0;
        let mut len = None;
        let mut timestamp = None;
        loop {
            let Some(line_len) = line_length(&self.buf[pos..]) else {
                if self.buf.len() > MAX_HEADER_BLOCK {
                    self.buf.advance(pos);
                    return HeaderResult::Bad;
                }
                return HeaderResult::NeedMore;
            };
            let line = trim_eol(&self.buf[pos..pos + line_len]);
            pos += line_len;
            if pos > MAX_HEADER_BLOCK {
                self.buf.advance(pos);
                return HeaderResult::Bad;
            }
            if line.is_empty() {
                self.buf.advance(pos);
                return HeaderResult::Done { len, timestamp };
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            let name = &line[..colon];
            let value = std::str::from_utf8(&line[colon + 1..]).unwrap_or("").trim();
            if name.eq_ignore_ascii_case(b"content-length") {
                len = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case(b"x-timestamp") {
                timestamp = value.parse::<f64>().ok().filter(|t| t.is_finite());
            }
        }
    }
}

enum HeaderResult {
    NeedMore,
    Bad,
    Done { len: Option<usize>, timestamp: Option<f64> },
}

fn jpeg_event(body: Bytes, timestamp: Option<f64>) -> Event {
    if body.starts_with(&[0xFF, 0xD8]) {
        Event::Jpeg(Part { jpeg: body, timestamp })
    } else {
        Event::Skipped(Skip::NotJpeg { size: body.len() })
    }
}

/// Length of the first line including its `\n`, if the line is complete.
fn line_length(buf: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', buf).map(|i| i + 1)
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_line_end(mut body: Bytes) -> Bytes {
    if body.ends_with(b"\n") {
        body.truncate(body.len() - 1);
    }
    if body.ends_with(b"\r") {
        body.truncate(body.len() - 1);
    }
    body
}

/// The `boundary` parameter of a Content-Type value, if any.
pub fn boundary_from_content_type(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(parser: &mut MultipartParser, chunks: &[&[u8]]) -> Vec<Event> {
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk);
            while let Some(e) = parser.next_event() {
                out.push(e);
            }
        }
        while let Some(e) = parser.finish() {
            out.push(e);
        }
        out
    }

    fn jpeg(n: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        v.extend(std::iter::repeat_n(n, len));
        v.extend([0xFF, 0xD9]);
        v
    }

    fn jpegs(events: &[Event]) -> Vec<Bytes> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Jpeg(p) => Some(p.jpeg.clone()),
                Event::Skipped(_) => None,
            })
            .collect()
    }

    #[test]
    fn boundary_param_forms() {
        assert_eq!(boundary_from_content_type("multipart/x-mixed-replace;boundary=ffmpeg").as_deref(), Some("ffmpeg"));
        assert_eq!(boundary_from_content_type("multipart/x-mixed-replace; boundary=\"--myb\"").as_deref(), Some("--myb"));
        assert_eq!(boundary_from_content_type("multipart/x-mixed-replace"), None);
    }

    #[test]
    fn lf_only_no_content_length_junk_first_and_dashed_declared_boundary() {
        let (a, b) = (jpeg(1, 50), jpeg(2, 70));
        let mut body = b"garbage before\n\n".to_vec();
        for j in [&a, &b] {
            body.extend(b"--frame\nContent-Type: image/jpeg\nX-Extra: 1\n\n");
            body.extend(j.iter());
            body.extend(b"\n");
        }
        let mut p = MultipartParser::new(Some("--frame"), 1 << 20);
        assert_eq!(jpegs(&parse_all(&mut p, &[&body])), vec![Bytes::from(a), Bytes::from(b)]);
    }

    #[test]
    fn boundary_line_without_dashes_and_undeclared_boundary() {
        let a = jpeg(7, 30);
        let mut body = Vec::new();
        for _ in 0..2 {
            body.extend(b"myboundary\r\nContent-Type: image/jpeg\r\n\r\n");
            body.extend(&a);
            body.extend(b"\r\n");
        }
        let mut p = MultipartParser::new(Some("myboundary"), 1 << 20);
        assert_eq!(jpegs(&parse_all(&mut p, &[&body])).len(), 2);

        let mut body = b"--xyz\r\nContent-Length: 34\r\n\r\n".to_vec();
        body.extend(&a);
        body.extend(b"\r\n--xyz\r\n\r\n");
        body.extend(&a);
        let mut p = MultipartParser::new(None, 1 << 20);
        assert_eq!(jpegs(&parse_all(&mut p, &[&body])), vec![Bytes::from(a.clone()), Bytes::from(a)]);
    }

    #[test]
    fn oversized_parts_are_skipped_without_buffering_them() {
        let small = jpeg(1, 10);
        let big = jpeg(2, 5000);
        let mut body = Vec::new();
        for (j, with_len) in [(&big, true), (&small, true), (&big, false), (&small, false)] {
            body.extend(b"--b\r\n");
            if with_len {
                body.extend(format!("Content-Length: {}\r\n", j.len()).as_bytes());
            }
            body.extend(b"\r\n");
            body.extend(j.iter());
            body.extend(b"\r\n");
        }
        let mut p = MultipartParser::new(Some("b"), 1000);
        let mut max_buffered = 0;
        let mut events = Vec::new();
        for chunk in body.chunks(100) {
            p.push(chunk);
            max_buffered = max_buffered.max(p.buffered());
            while let Some(e) = p.next_event() {
                events.push(e);
            }
        }
        events.extend(p.finish());
        assert!(max_buffered <= 1000 + 100, "buffered {max_buffered}");
        let skipped = events.iter().filter(|e| matches!(e, Event::Skipped(Skip::TooLarge { .. }))).count();
        assert_eq!(skipped, 2, "{events:?}");
        assert_eq!(jpegs(&events), vec![Bytes::from(small.clone()), Bytes::from(small)]);
    }

    #[test]
    fn non_jpeg_parts_and_endless_headers_are_reported_and_survived() {
        let a = jpeg(3, 20);
        let mut body = b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n".to_vec();
        body.extend(b"--b\r\n");
        body.extend(std::iter::repeat_n(b'x', MAX_HEADER_BLOCK + 10));
        body.extend(b"\r\n\r\n--b\r\n\r\n");
        body.extend(&a);
        body.extend(b"\r\n--b\r\n");
        let mut p = MultipartParser::new(Some("b"), 1 << 20);
        let events = parse_all(&mut p, &[&body]);
        assert!(events.contains(&Event::Skipped(Skip::NotJpeg { size: 5 })), "{events:?}");
        assert!(events.contains(&Event::Skipped(Skip::BadHeaders)), "{events:?}");
        assert_eq!(jpegs(&events), vec![Bytes::from(a)]);
    }

    #[test]
    fn garbage_never_grows_the_buffer() {
        let mut p = MultipartParser::new(Some("b"), 1 << 20);
        for i in 0..10_000u32 {
            p.push(&i.to_le_bytes().repeat(100));
            while p.next_event().is_some() {}
        }
        assert!(p.buffered() < 1024, "{}", p.buffered());
        let mut p = MultipartParser::new(None, 1 << 20);
        for _ in 0..10_000 {
            p.push(&[b'z'; 400]);
            while p.next_event().is_some() {}
        }
        assert!(p.buffered() <= MAX_TOKEN + 4, "{}", p.buffered());
    }
}
