//! Runs a built-in source (the test pattern or a synthetic telescope scene) on its own thread at
//! the configured rate.

use crate::ingest::health::SourceEvent;
use crate::media::scene::{Scene, SceneRenderer};
use crate::media::I420;
use crate::pipeline::SourceFrame;
use crate::stream::Stream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// While no one watches, a frame is still made at least this often, so a viewer or a snapshot
/// gets a recent picture at once without the pattern costing CPU all day.
const UNWATCHED_INTERVAL: Duration = Duration::from_secs(1);

pub fn spawn(stream: Arc<Stream>, scene: Scene, width: usize, height: usize, fps: f64) -> std::io::Result<()> {
    let interval = Duration::from_secs_f64(1.0 / fps.clamp(0.001, 240.0));
    std::thread::Builder::new().name(format!("pattern-{}", stream.name())).spawn(move || {
        let mut pattern = SceneRenderer::new(scene, stream.name(), width, height);
        let mut next = Instant::now();
        let mut last_made: Option<Instant> = None;
        stream.report(SourceEvent::Starting);
        while !stream.is_stopped() {
            let now = Instant::now();
            let watched = stream.is_watched();
            if watched || last_made.is_none_or(|t| now.duration_since(t) >= UNWATCHED_INTERVAL.max(interval)) {
                let mut pic = I420::new(2, 2);
                let unix_ms = crate::timing::wall_ms(now);
                pattern.render(unix_ms as u64, &mut pic);
                stream.deliver(SourceFrame::Raw(Arc::new(pic)), now, unix_ms);
                last_made = Some(now);
            }
            next += interval;
            let now = Instant::now();
            if next < now {
                // Fell behind (machine busy): skip the missed ticks rather than burst.
                next = now + interval;
            }
            // Sleep in short steps so a slow pattern still notices a new viewer and shutdown.
            while Instant::now() < next && !stream.is_stopped() {
                if !watched && stream.is_watched() {
                    break;
                }
                std::thread::sleep((next - Instant::now()).min(Duration::from_millis(50)));
            }
        }
    })?;
    Ok(())
}
