//! The focus view: one region of a stream's picture at the camera's native resolution,
//! encoded as its own small track (the `focus` rendition) only while someone watches it, with
//! a sharpness figure for every frame.
//!
//! [`FocusControl`] is what the API sets (one region per stream; the last request wins) and
//! what the region's encoder reads: where to crop, and where to put each frame's
//! [`Sharpness`]. The history (a minute of figures) is what the player draws as a graph;
//! each new figure also goes out on the stream's event stream.

use crate::lock;
use scopecast_shared::api::{FocusRegion, FocusRequest, Sharpness};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::watch;

/// A region asked for by a point: this size, centred on it.
pub const DEFAULT_SIZE: u32 = 256;
/// The smallest region: the encoder's macroblocks, and enough sky for a star.
pub const MIN_SIZE: u32 = 32;
/// The largest: a focus view is a detail, not a second full stream.
pub const MAX_SIZE: (u32, u32) = (1920, 1080);
/// Figures kept for the graph.
const HISTORY_MS: u64 = 60_000;
const HISTORY_MAX: usize = 600;

#[derive(Default, Debug)]
struct Inner {
    region: Option<FocusRegion>,
    history: VecDeque<Sharpness>,
}

#[derive(Debug)]
pub struct FocusControl {
    inner: Mutex<Inner>,
    latest: watch::Sender<Option<Sharpness>>,
}

impl Default for FocusControl {
    fn default() -> Self {
        Self { inner: Mutex::default(), latest: watch::channel(None).0 }
    }
}

impl FocusControl {
    pub fn region(&self) -> Option<FocusRegion> {
        lock(&self.inner).region
    }

    /// Sets the region (a point becomes a default-sized region around it); the history starts
    /// again, since figures of another region do not compare.
    pub fn set(&self, request: FocusRequest) -> Result<FocusRegion, String> {
        let region = match request {
            FocusRequest::Region(r) => {
                let (max_w, max_h) = MAX_SIZE;
                if r.width < MIN_SIZE || r.height < MIN_SIZE || r.width > max_w || r.height > max_h {
                    return Err(format!("a region is {MIN_SIZE}x{MIN_SIZE} to {max_w}x{max_h} pixels; this one is {}x{}", r.width, r.height));
                }
                r
            }
            FocusRequest::Point { x, y } => {
                let half = DEFAULT_SIZE / 2;
                FocusRegion { x: x.saturating_sub(half), y: y.saturating_sub(half), width: DEFAULT_SIZE, height: DEFAULT_SIZE }
            }
        };
        let mut inner = lock(&self.inner);
        inner.region = Some(region);
        inner.history.clear();
        Ok(region)
    }

    pub fn clear(&self) {
        let mut inner = lock(&self.inner);
        inner.region = None;
        inner.history.clear();
    }

    /// The region inside a `width x height` picture: clamped to it, on even pixels (4:2:0
    /// chroma), sizes even. `None` without a region.
    pub fn crop_for(&self, width: usize, height: usize) -> Option<(usize, usize, usize, usize)> {
        let r = self.region()?;
        crop_within(r, width, height)
    }

    /// A frame's figure: kept for the graph and sent to the event streams.
    pub fn record(&self, sharpness: Sharpness) {
        let mut inner = lock(&self.inner);
        let newest = sharpness.captured_ms;
        while inner.history.front().is_some_and(|s| newest.saturating_sub(s.captured_ms) > HISTORY_MS) || inner.history.len() >= HISTORY_MAX {
            inner.history.pop_front();
        }
        inner.history.push_back(sharpness);
        drop(inner);
        self.latest.send_replace(Some(sharpness));
    }

    pub fn history(&self) -> Vec<Sharpness> {
        lock(&self.inner).history.iter().copied().collect()
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Sharpness>> {
        self.latest.subscribe()
    }
}

/// `region` clamped into a `width x height` picture, on even pixels; `None` when the picture
/// is smaller than the smallest region.
fn crop_within(region: FocusRegion, width: usize, height: usize) -> Option<(usize, usize, usize, usize)> {
    let even = |v: usize| v & !1;
    let w = even((region.width as usize).min(width));
    let h = even((region.height as usize).min(height));
    if w < MIN_SIZE as usize || h < MIN_SIZE as usize {
        return None;
    }
    let x = even((region.x as usize).min(width - w));
    let y = even((region.y as usize).min(height - h));
    Some((x, y, w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharpness(at: u64) -> Sharpness {
        Sharpness { hfr_px: Some(2.0), stars: 3, gradient: 10.0, captured_ms: at }
    }

    #[test]
    fn a_point_becomes_a_default_region_and_regions_are_clamped_to_the_picture_on_even_pixels() {
        let c = FocusControl::default();
        assert_eq!(c.crop_for(1280, 720), None, "no region yet");
        assert_eq!(c.set(FocusRequest::Point { x: 640, y: 360 }), Ok(FocusRegion { x: 512, y: 232, width: 256, height: 256 }));
        assert_eq!(c.crop_for(1280, 720), Some((512, 232, 256, 256)));
        // Near a corner: moved inside.
        c.set(FocusRequest::Point { x: 1275, y: 5 }).expect("set");
        assert_eq!(c.crop_for(1280, 720), Some((1024, 0, 256, 256)));
        // Odd numbers: even pixels for 4:2:0.
        c.set(FocusRequest::Region(FocusRegion { x: 101, y: 51, width: 99, height: 65 })).expect("set");
        assert_eq!(c.crop_for(1280, 720), Some((100, 50, 98, 64)));
        // Larger than a small picture: the whole picture.
        c.set(FocusRequest::Region(FocusRegion { x: 0, y: 0, width: 800, height: 600 })).expect("set");
        assert_eq!(c.crop_for(640, 360), Some((0, 0, 640, 360)));
        assert_eq!(c.crop_for(20, 20), None, "too small a picture");
        assert!(c.set(FocusRequest::Region(FocusRegion { x: 0, y: 0, width: 8, height: 600 })).is_err());
        assert!(c.set(FocusRequest::Region(FocusRegion { x: 0, y: 0, width: 4000, height: 600 })).is_err());
        c.clear();
        assert_eq!(c.region(), None);
    }

    #[test]
    fn the_history_keeps_a_minute_and_starts_again_with_a_new_region() {
        let c = FocusControl::default();
        c.set(FocusRequest::Point { x: 300, y: 300 }).expect("set");
        let mut events = c.subscribe();
        for t in 0..100 {
            c.record(sharpness(t * 1000));
        }
        let h = c.history();
        assert_eq!((h.first().map(|s| s.captured_ms), h.last().map(|s| s.captured_ms)), (Some(39_000), Some(99_000)));
        assert!(events.has_changed().expect("open"));
        assert_eq!(events.borrow_and_update().map(|s| s.captured_ms), Some(99_000));
        c.set(FocusRequest::Point { x: 10, y: 10 }).expect("set");
        assert!(c.history().is_empty());
    }
}
