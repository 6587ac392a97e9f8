//! Runs the test pattern on its own thread at the configured rate.

use crate::media::testpattern::TestPattern;
use crate::media::I420;
use crate::pipeline::{CapturedFrame, Pipeline, SourceFrame};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// While no one watches, a frame is still made at least this often, so a viewer who arrives
/// gets a recent picture at once without the pattern costing CPU all day.
const UNWATCHED_INTERVAL: Duration = Duration::from_secs(1);

pub fn spawn(pipeline: Arc<Pipeline>, width: usize, height: usize, fps: f64) -> std::io::Result<()> {
    let interval = Duration::from_secs_f64(1.0 / fps.clamp(0.001, 240.0));
    std::thread::Builder::new().name(format!("pattern-{}", pipeline.name)).spawn(move || {
        let mut pattern = TestPattern::new(&pipeline.name, width, height);
        let mut next = Instant::now();
        let mut last_made: Option<Instant> = None;
        while !pipeline.is_stopped() {
            let now = Instant::now();
            let watched = pipeline.is_watched();
            if watched || last_made.is_none_or(|t| now.duration_since(t) >= UNWATCHED_INTERVAL.max(interval)) {
                let mut pic = I420::new(2, 2);
                pattern.render(super::unix_ms(), &mut pic);
                pipeline.push_frame(CapturedFrame { data: SourceFrame::Raw(pic), captured: now });
                last_made = Some(now);
            }
            next += interval;
            let now = Instant::now();
            if next < now {
                // Fell behind (machine busy): skip the missed ticks rather than burst.
                next = now + interval;
            }
            // Sleep in short steps so a slow pattern still notices a new viewer and shutdown.
            while Instant::now() < next && !pipeline.is_stopped() {
                if !watched && pipeline.is_watched() {
                    break;
                }
                std::thread::sleep((next - Instant::now()).min(Duration::from_millis(50)));
            }
        }
    })?;
    Ok(())
}
