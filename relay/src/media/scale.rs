//! I420 scaling with `fast_image_resize` (SIMD bilinear), plane by plane.

use super::i420::I420;
use fast_image_resize::{images::Image, images::ImageRef, FilterType, ImageBufferError, PixelType, ResizeAlg, ResizeError, ResizeOptions, Resizer};

#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("scaler buffer: {0}")]
    Buffer(#[from] ImageBufferError),
    #[error("scaler: {0}")]
    Resize(#[from] ResizeError),
}

pub struct Scaler {
    resizer: Resizer,
    options: ResizeOptions,
}

impl Default for Scaler {
    fn default() -> Self {
        Self { resizer: Resizer::new(), options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)) }
    }
}

impl Scaler {
    /// Scales `src` into `dst` at `width x height` (both even).
    pub fn scale(&mut self, src: &I420, dst: &mut I420, width: usize, height: usize) -> Result<(), ScaleError> {
        dst.reshape(width, height);
        let (scw, sch, dcw, dch) = (src.chroma_width(), src.chroma_height(), dst.chroma_width(), dst.chroma_height());
        self.plane(&src.y, src.width, src.height, &mut dst.y, width, height)?;
        self.plane(&src.u, scw, sch, &mut dst.u, dcw, dch)?;
        self.plane(&src.v, scw, sch, &mut dst.v, dcw, dch)
    }

    fn plane(&mut self, src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) -> Result<(), ScaleError> {
        let src = ImageRef::new(sw as u32, sh as u32, src, PixelType::U8)?;
        let mut dst = Image::from_slice_u8(dw as u32, dh as u32, dst, PixelType::U8)?;
        Ok(self.resizer.resize(&src, &mut dst, &self.options)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_all_planes_and_keeps_flat_colour() {
        let mut src = I420::new(1280, 720);
        src.y.fill(200);
        src.u.fill(60);
        src.v.fill(190);
        let mut dst = I420::new(2, 2);
        Scaler::default().scale(&src, &mut dst, 640, 480).expect("scales");
        assert_eq!((dst.width, dst.height, dst.y.len(), dst.u.len()), (640, 480, 640 * 480, 320 * 240));
        assert!(dst.y.iter().all(|&v| v == 200) && dst.u.iter().all(|&v| v == 60) && dst.v.iter().all(|&v| v == 190));
    }
}
