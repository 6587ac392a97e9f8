//! The relay as a WHIP client's peer connection (RFC 9725): it offers, a publish target (an SFU
//! or a CDN's ingest) answers, and the same packetized H.264 that viewers get flows to it. The
//! HTTP side (POST, Location, DELETE, backoff) is `crate::publish`; only the peer connection is
//! here, beside the viewers' sessions, so the webrtc crate stays behind this module.

use super::{attach_media, h264_capability, resolve_hosts, sdp, ViewerStats, WebRtcEngine, WebRtcError, GATHER_TIMEOUT};
use crate::track::Track;
use std::sync::Arc;
use tokio::sync::watch;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocal;

/// One publish session's peer connection.
pub struct Publisher {
    pc: Arc<RTCPeerConnection>,
    /// The complete offer, every candidate included: it is sent only after gathering, so there
    /// is nothing left to trickle (targets differ in whether they take PATCH at all).
    pub offer: String,
    closed: watch::Sender<bool>,
    ended: watch::Receiver<bool>,
}

impl WebRtcEngine {
    /// A sendonly offer of `track`'s video, with H.264 as both 42e01f and 42001f
    /// (packetization-mode 1), ready once its candidates are gathered (relay candidates too,
    /// through `servers`). Media flows once the answer is applied and ICE connects.
    /// Counts into `stats`, which may outlive the session (a target's totals).
    pub async fn create_publisher(&self, servers: &[crate::turn::IceServer], source: Arc<Track>, stats: Arc<ViewerStats>) -> Result<Publisher, WebRtcError> {
        let config = RTCConfiguration { ice_servers: servers.iter().filter_map(super::rtc_ice_server).collect(), ..Default::default() };
        let pc = Arc::new(self.publish_api.new_peer_connection(config).await?);
        match self.offer(&pc, source, stats).await {
            Ok(p) => Ok(p),
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }

    async fn offer(&self, pc: &Arc<RTCPeerConnection>, source: Arc<Track>, stats: Arc<ViewerStats>) -> Result<Publisher, WebRtcError> {
        let track = Arc::new(TrackLocalStaticRTP::new(h264_capability(), "video".into(), format!("scopecast-{}", source.name)));
        // Sendonly: `add_track` would offer sendrecv, which some ingests refuse (Cloudflare: 406).
        let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, send_encodings: vec![] };
        let transceiver = pc.add_transceiver_from_track(Arc::clone(&track) as Arc<dyn TrackLocal + Send + Sync>, Some(init)).await?;
        let sender = transceiver.sender().await;
        let offer = pc.create_offer(None).await?;
        let mut gathered = pc.gathering_complete_promise().await;
        pc.set_local_description(offer).await?;
        let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.recv()).await;
        let local = pc.local_description().await.ok_or(WebRtcError::NoVideoInAnswer)?;
        let offer = sdp::add_host_candidates(&local.sdp, &resolve_hosts(&self.additional_hosts).await);
        let (ended_tx, ended) = watch::channel(false);
        let on_end = Box::new(move || {
            ended_tx.send_replace(true);
        });
        let closed = attach_media(pc, sender, track, super::ladder::ViewerLadder::single(source), on_end, stats, "WHIP publish session");
        Ok(Publisher { pc: Arc::clone(pc), offer, closed, ended })
    }
}

impl Publisher {
    /// Applies the target's answer, after checking it accepts our video.
    pub async fn accept_answer(&self, answer: &str) -> Result<(), WebRtcError> {
        sdp::check_publish_answer(answer)?;
        self.pc.set_remote_description(RTCSessionDescription::answer(answer.to_owned())?).await?;
        Ok(())
    }

    pub fn is_connected(&self) -> bool {
        self.pc.connection_state() == RTCPeerConnectionState::Connected
    }

    /// ICE lost consent (no answer to its checks for a few seconds) and has not failed yet.
    pub fn is_disconnected(&self) -> bool {
        self.pc.connection_state() == RTCPeerConnectionState::Disconnected
    }

    /// Resolves when the connection has failed (consent lost), closed, or never connected in
    /// time.
    pub async fn ended(&self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
    }

    /// Stops media and closes the peer connection.
    pub async fn close(&self) {
        self.closed.send_replace(true);
        let _ = self.pc.close().await;
    }
}
