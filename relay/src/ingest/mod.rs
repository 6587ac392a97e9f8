//! Sources: where a stream's frames come from. A picture source pushes frames into its stream
//! and knows nothing of WebRTC or HTTP serving; an encoded one feeds the stream's track (`whep`
//! through the WebRTC seam, `crate::webrtc::pull`; `rtsp`), or its encoder when it must be
//! transcoded (`rtsp`).

pub mod encoded;
pub mod exec;
pub mod health;
pub mod mjpeg;
pub mod pipe;
pub mod rtsp;
pub mod testpattern;
pub mod whep;
pub mod whip;

use crate::stream::Stream;
use health::SourceEvent;
use scopecast_shared::Viewers;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A source's connection loop: connect, read, reconnect after failures, for as long as it is
/// polled.
pub(crate) trait Connection {
    fn run(&mut self, stream: &Arc<Stream>) -> impl Future<Output = ()> + Send;
}

/// Runs `source` for `stream` until the stream stops: always, or, for an on-demand stream,
/// only while someone watches (and `stop_after` longer), marking the stream idle in between.
pub(crate) async fn supervise(stream: &Arc<Stream>, source: &mut impl Connection) {
    let mut demand = stream.demand.subscribe();
    let on_demand = stream.config.on_demand;
    loop {
        if on_demand {
            tokio::select! {
                r = demand.wait_for(|v| v.total() > 0) => if r.is_err() { return },
                () = stream.stopped() => return,
            }
        }
        stream.report(SourceEvent::Starting);
        tokio::select! {
            () = source.run(stream) => return,
            () = stream.stopped() => return,
            () = unwatched_for(&mut demand, stream.config.stop_after), if on_demand => stream.went_idle(),
        }
    }
}

/// Resolves once nobody has watched for `linger`.
async fn unwatched_for(demand: &mut watch::Receiver<Viewers>, linger: Duration) {
    loop {
        if demand.wait_for(|v| v.total() == 0).await.is_err() {
            return std::future::pending().await;
        }
        if tokio::time::timeout(linger, demand.wait_for(|v| v.total() > 0)).await.is_err() {
            return;
        }
    }
}
