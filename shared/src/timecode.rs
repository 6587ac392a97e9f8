//! The timecode strip: 64 bits drawn across the top band of a frame so that frame number and
//! capture time can be read back from a decoded picture (see `shared/timecode.md` in the
//! steering repository). Pure functions over a luma plane, so the relay draws it, and tests,
//! benchmarks and players read it, with the same code.

/// Luma of a 1 bit and of a 0 bit (video range).
pub const WHITE: u8 = 235;
pub const BLACK: u8 = 16;

/// Bits in the strip.
pub const CELLS: usize = 64;

/// A frame's identity as carried by the strip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timecode {
    /// Frame counter modulo 65536.
    pub frame: u16,
    /// Unix time in milliseconds modulo 2^40, taken when the frame was made.
    pub capture_ms: u64,
}

/// Mask for the 40-bit capture time.
pub const TIME_MASK: u64 = (1 << 40) - 1;

impl Timecode {
    pub fn new(frame: u16, unix_ms: u64) -> Self {
        Self { frame, capture_ms: unix_ms & TIME_MASK }
    }

    /// The 64-bit word, check byte included.
    pub fn to_bits(self) -> u64 {
        let body = (u64::from(self.frame) << 48) | ((self.capture_ms & TIME_MASK) << 8);
        body | u64::from(check_byte(body))
    }

    /// Decodes a word; `None` when the check byte does not match, or for the all-zero word,
    /// which a black picture reads as and which no real capture time (1970) produces.
    pub fn from_bits(bits: u64) -> Option<Self> {
        if bits == 0 || check_byte(bits) != (bits & 0xff) as u8 {
            return None;
        }
        Some(Self { frame: (bits >> 48) as u16, capture_ms: (bits >> 8) & TIME_MASK })
    }

    /// Milliseconds from capture to `now_unix_ms`, modulo 2^40 (valid on one clock).
    pub fn age_ms(self, now_unix_ms: u64) -> u64 {
        (now_unix_ms & TIME_MASK).wrapping_sub(self.capture_ms) & TIME_MASK
    }
}

/// XOR of the seven bytes above the check byte.
fn check_byte(word: u64) -> u8 {
    (1..8).fold(0u8, |acc, i| acc ^ ((word >> (i * 8)) as u8))
}

/// Height of the strip for a frame `height` pixels tall: `max(8, H/40)` rounded down to even.
pub fn band_height(height: usize) -> usize {
    (height / 40).max(8) & !1
}

/// Columns `start..end` of cell `i` in a frame `width` pixels wide.
pub fn cell_span(i: usize, width: usize) -> (usize, usize) {
    (i * width / CELLS, (i + 1) * width / CELLS)
}

/// Draws the strip into a luma plane (`stride` bytes per row). Chroma under the band must be
/// set to 128 by the caller. Does nothing for frames narrower than 128 pixels.
pub fn draw(luma: &mut [u8], stride: usize, width: usize, height: usize, tc: Timecode) {
    if width < 2 * CELLS || height < 8 {
        return;
    }
    let bits = tc.to_bits();
    let band = band_height(height);
    for row in 0..band {
        let line = &mut luma[row * stride..row * stride + width];
        for i in 0..CELLS {
            let (a, b) = cell_span(i, width);
            let on = (bits >> (CELLS - 1 - i)) & 1 == 1;
            line[a..b].fill(if on { WHITE } else { BLACK });
        }
    }
}

/// Reads the strip from any picture through `sample(x, y) -> brightness 0..=255`, so that a
/// luma plane or an RGBA canvas can be read alike. Averages a 3x3 patch at each cell centre.
pub fn read_with(width: usize, height: usize, sample: impl Fn(usize, usize) -> u8) -> Option<Timecode> {
    if width < 2 * CELLS || height < 8 {
        return None;
    }
    let y = band_height(height) / 2;
    let mut bits = 0u64;
    for i in 0..CELLS {
        let (a, b) = cell_span(i, width);
        let x = (a + b) / 2;
        let mut sum = 0u32;
        for dy in [y.saturating_sub(1), y, y + 1] {
            for dx in [x.saturating_sub(1), x, (x + 1).min(width - 1)] {
                sum += u32::from(sample(dx, dy));
            }
        }
        bits = (bits << 1) | u64::from(sum / 9 > 128);
    }
    Timecode::from_bits(bits)
}

/// Reads the strip from a luma plane.
pub fn read(luma: &[u8], stride: usize, width: usize, height: usize) -> Option<Timecode> {
    if luma.len() < stride * band_height(height) {
        return None;
    }
    read_with(width, height, |x, y| luma[y * stride + x])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_heights_match_the_spec() {
        assert_eq!(band_height(720), 18);
        assert_eq!(band_height(480), 12);
        assert_eq!(band_height(240), 8);
        assert_eq!(band_height(100), 8);
    }

    #[test]
    fn word_round_trips_and_rejects_a_flipped_bit() {
        let tc = Timecode::new(0xBEEF, 1_795_575_705_705);
        let bits = tc.to_bits();
        assert_eq!(Timecode::from_bits(bits), Some(tc));
        for bit in 0..64 {
            assert_eq!(Timecode::from_bits(bits ^ (1 << bit)), None, "bit {bit}");
        }
    }

    #[test]
    fn drawn_strip_reads_back_at_several_sizes() {
        for (w, h) in [(1280, 720), (640, 480), (320, 240), (1080, 1920), (130, 8)] {
            let mut luma = vec![90u8; w * h];
            let tc = Timecode::new(4242, 1_700_000_123_456);
            draw(&mut luma, w, w, h, tc);
            assert_eq!(read(&luma, w, w, h), Some(tc), "{w}x{h}");
        }
    }

    #[test]
    fn blank_picture_has_no_timecode() {
        let luma = vec![16u8; 640 * 480];
        assert_eq!(read(&luma, 640, 640, 480), None);
    }

    #[test]
    fn age_wraps_modulo_2_pow_40() {
        let tc = Timecode::new(1, TIME_MASK - 5);
        assert_eq!(tc.age_ms(TIME_MASK + 1 + 10), 16);
    }
}
