//! Planar 4:2:0 pictures, the one format the pipeline works in between decode and encode.

/// An I420 picture in one buffer: Y (`width x height`), then U, then V (each
/// `ceil(width/2) x ceil(height/2)`), tightly packed. That is also the layout libjpeg-turbo
/// writes a 4:2:0 JPEG in, so the decoder writes straight into the buffer the encoder reads.
/// Width and height are even in the pipeline (the encoder wants them so).
#[derive(Clone, PartialEq, Eq)]
pub struct I420 {
    pub width: usize,
    pub height: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for I420 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I420({}x{})", self.width, self.height)
    }
}

impl I420 {
    /// A black picture.
    pub fn new(width: usize, height: usize) -> Self {
        let mut pic = Self { width: 0, height: 0, data: Vec::new() };
        pic.reshape(width, height);
        pic
    }

    pub fn chroma_width(&self) -> usize {
        self.width.div_ceil(2)
    }

    pub fn chroma_height(&self) -> usize {
        self.height.div_ceil(2)
    }

    fn luma_len(&self) -> usize {
        self.width * self.height
    }

    fn chroma_len(&self) -> usize {
        self.chroma_width() * self.chroma_height()
    }

    /// Resizes in place, reusing the allocation. A picture that changes size starts black.
    pub fn reshape(&mut self, width: usize, height: usize) {
        if (width, height) == (self.width, self.height) {
            return;
        }
        self.width = width;
        self.height = height;
        let (y, c) = (self.luma_len(), self.chroma_len());
        self.data.clear();
        self.data.resize(y, 16);
        self.data.resize(y + 2 * c, 128);
    }

    /// The `w x h` rectangle at (`x`, `y`) of `src` into `self` (reshaped to it); all four
    /// even, so chroma rows and columns line up.
    pub fn crop_from(&mut self, src: &I420, (x, y, w, h): (usize, usize, usize, usize)) {
        debug_assert!(x % 2 == 0 && y % 2 == 0 && w % 2 == 0 && h % 2 == 0 && x + w <= src.width && y + h <= src.height);
        self.reshape(w, h);
        let (sw, scw) = (src.width, src.chroma_width());
        let (dy, du, dv) = self.planes_mut();
        for (row, out) in dy.chunks_exact_mut(w).enumerate() {
            let start = (y + row) * sw + x;
            out.copy_from_slice(&src.y()[start..start + w]);
        }
        for (plane, dst) in [(src.u(), du), (src.v(), dv)] {
            for (row, out) in dst.chunks_exact_mut(w / 2).enumerate() {
                let start = (y / 2 + row) * scw + x / 2;
                out.copy_from_slice(&plane[start..start + w / 2]);
            }
        }
    }

    pub fn y(&self) -> &[u8] {
        &self.data[..self.luma_len()]
    }

    pub fn u(&self) -> &[u8] {
        let (y, c) = (self.luma_len(), self.chroma_len());
        &self.data[y..y + c]
    }

    pub fn v(&self) -> &[u8] {
        let (y, c) = (self.luma_len(), self.chroma_len());
        &self.data[y + c..y + 2 * c]
    }

    pub fn y_mut(&mut self) -> &mut [u8] {
        self.planes_mut().0
    }

    pub fn u_mut(&mut self) -> &mut [u8] {
        self.planes_mut().1
    }

    pub fn v_mut(&mut self) -> &mut [u8] {
        self.planes_mut().2
    }

    /// The three planes at once, for code that writes all of them.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let (y, c) = (self.luma_len(), self.chroma_len());
        let (luma, chroma) = self.data.split_at_mut(y);
        let (u, v) = chroma.split_at_mut(c);
        (luma, u, v)
    }

    /// Y, U and V one after the other.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl openh264::formats::YUVSource for I420 {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let c = self.chroma_width();
        (self.width, c, c)
    }

    fn y(&self) -> &[u8] {
        I420::y(self)
    }

    fn u(&self) -> &[u8] {
        I420::u(self)
    }

    fn v(&self) -> &[u8] {
        I420::v(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_are_consecutive_and_reshaping_keeps_them_consistent() {
        let mut p = I420::new(6, 4);
        assert_eq!((p.y().len(), p.u().len(), p.v().len(), p.as_bytes().len()), (24, 6, 6, 36));
        p.u_mut().fill(1);
        p.v_mut().fill(2);
        assert_eq!(&p.as_bytes()[24..], &[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
        p.reshape(5, 3);
        assert_eq!((p.y().len(), p.u().len(), p.v().len()), (15, 6, 6), "odd sizes round chroma up");
        assert!(p.y().iter().all(|&v| v == 16) && p.u().iter().all(|&v| v == 128), "a resized picture starts black");
    }

    #[test]
    fn a_crop_takes_the_rectangle_in_every_plane() {
        let mut src = I420::new(8, 6);
        src.y_mut().iter_mut().enumerate().for_each(|(i, v)| *v = i as u8);
        src.u_mut().iter_mut().enumerate().for_each(|(i, v)| *v = 100 + i as u8);
        src.v_mut().iter_mut().enumerate().for_each(|(i, v)| *v = 200 + i as u8);
        let mut out = I420::new(2, 2);
        out.crop_from(&src, (2, 2, 4, 2));
        assert_eq!((out.width, out.height), (4, 2));
        assert_eq!(out.y(), &[18, 19, 20, 21, 26, 27, 28, 29]);
        assert_eq!((out.u(), out.v()), (&[105u8, 106][..], &[205u8, 206][..]));
    }
}
