//! Sources: where a stream's frames come from. A picture source pushes frames into its stream
//! and knows nothing of WebRTC or HTTP serving; an encoded one (`whep`) feeds the stream's track
//! through the WebRTC seam (`crate::webrtc::pull`).

pub mod health;
pub mod mjpeg;
pub mod testpattern;
pub mod whep;

use scopecast_shared::Viewers;
use std::time::Duration;
use tokio::sync::watch;

/// Resolves once nobody has watched for `linger`.
pub(crate) async fn unwatched_for(demand: &mut watch::Receiver<Viewers>, linger: Duration) {
    loop {
        if demand.wait_for(|v| v.total() == 0).await.is_err() {
            return std::future::pending().await;
        }
        if tokio::time::timeout(linger, demand.wait_for(|v| v.total() > 0)).await.is_err() {
            return;
        }
    }
}
