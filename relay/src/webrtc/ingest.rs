//! The relay as a WHIP server's peer connection: a publisher (OBS, GStreamer, FFmpeg 7, a
//! browser) offers to send, the relay answers to receive, and the H.264 it sends comes out as
//! access units (`pull::AccessUnits`) on a bounded channel, for `crate::ingest::whip`. Audio is
//! accepted, so that a publisher sending it is not refused, and dropped: a stream is video.
//! The HTTP side (POST, PATCH, DELETE, tokens) is `crate::http::whip`.

use super::pull::{AccessUnits, Rebase};
use super::{sdp, Remote, Session, ViewerStats, WebRtcEngine, WebRtcError, GATHER_TIMEOUT};
use crate::pipeline::RtpFrame;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;

/// Access units waiting for the ingest task. It keeps up unless something is badly wrong; a
/// full queue drops frames (logged) rather than grow or stall the peer connection.
const QUEUED_FRAMES: usize = 120;

/// One publisher's peer connection.
pub struct IngestSession {
    /// The answer, trickle and ICE restart, close: as for a viewer.
    pub session: Session,
    /// The access units, taken once by the ingest task.
    frames: Mutex<Option<mpsc::Receiver<RtpFrame>>>,
    /// The publisher's video SSRC once media flows (0 before), for keyframe requests.
    ssrc: Arc<AtomicU32>,
    ended: watch::Receiver<bool>,
}

impl WebRtcEngine {
    /// Answers a publisher's offer: receives its H.264 video (and drops its audio), gathering
    /// relay candidates through `servers` as a viewer's session does.
    pub async fn accept_publisher(&self, offer: &str, servers: &[crate::turn::IceServer]) -> Result<IngestSession, WebRtcError> {
        sdp::check_publisher_offer(offer)?;
        let config = RTCConfiguration { ice_servers: servers.iter().filter_map(super::rtc_ice_server).collect(), ..Default::default() };
        let pc = Arc::new(self.ingest_api.new_peer_connection(config).await?);
        match self.receive(&pc, offer).await {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }

    async fn receive(&self, pc: &Arc<RTCPeerConnection>, offer: &str) -> Result<IngestSession, WebRtcError> {
        let (tx, rx) = mpsc::channel(QUEUED_FRAMES);
        let ssrc = Arc::new(AtomicU32::new(0));
        let (ended_tx, ended) = watch::channel(false);
        {
            let ssrc = Arc::clone(&ssrc);
            pc.on_track(Box::new(move |remote, _, _| {
                let (tx, ssrc) = (tx.clone(), Arc::clone(&ssrc));
                tokio::spawn(async move {
                    if remote.kind() != RTPCodecType::Video {
                        // Read and dropped: unread packets would only queue in the crate.
                        while remote.read_rtp().await.is_ok() {}
                        return;
                    }
                    ssrc.store(remote.ssrc(), Ordering::Relaxed);
                    let clock = Rebase::default();
                    let mut units = AccessUnits::default();
                    let mut dropped = 0u64;
                    while let Ok((packet, _)) = remote.read_rtp().await {
                        for frame in units.push(packet, &clock) {
                            match tx.try_send(frame) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    dropped += 1;
                                    if dropped.is_power_of_two() {
                                        tracing::warn!("the WHIP ingest is behind: {dropped} frames dropped");
                                    }
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        }
                    }
                });
                Box::pin(async {})
            }));
        }
        pc.on_peer_connection_state_change(Box::new(move |state| {
            if matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
                ended_tx.send_replace(true);
            }
            Box::pin(async {})
        }));
        pc.set_remote_description(RTCSessionDescription::offer(offer.to_owned())?).await?;
        let answer = pc.create_answer(None).await?;
        let mut gathered = pc.gathering_complete_promise().await;
        pc.set_local_description(answer).await?;
        let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.recv()).await;
        let local = pc.local_description().await.ok_or(WebRtcError::NoVideoInAnswer)?;
        if !sdp::answer_receives_video(&local.sdp) {
            return Err(WebRtcError::NoVideoInAnswer);
        }
        let extra_hosts = super::resolve_hosts(&self.additional_hosts).await;
        let answer = sdp::add_host_candidates(&local.sdp, &extra_hosts);
        let ufrag = offer.lines().find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:").map(str::to_owned));
        let session = Session {
            pc: Arc::clone(pc),
            answer,
            remote: tokio::sync::Mutex::new(Remote { offer: offer.to_owned(), ufrag }),
            extra_hosts,
            closed: watch::channel(false).0,
            stats: Arc::new(ViewerStats::default()),
            ladder: None,
        };
        Ok(IngestSession { session, frames: Mutex::new(Some(rx)), ssrc, ended })
    }
}

impl IngestSession {
    /// The access units; `None` after the first call.
    pub fn take_frames(&self) -> Option<mpsc::Receiver<RtpFrame>> {
        crate::lock(&self.frames).take()
    }

    pub fn is_connected(&self) -> bool {
        self.session.state() == RTCPeerConnectionState::Connected
    }

    /// Asks the publisher for a keyframe (PLI). The caller throttles.
    pub async fn request_keyframe(&self) {
        let media_ssrc = self.ssrc.load(Ordering::Relaxed);
        if media_ssrc != 0 {
            let _ = self.session.pc.write_rtcp(&[Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc })]).await;
        }
    }

    /// Resolves when the connection has failed or closed.
    pub async fn ended(&self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
    }
}
