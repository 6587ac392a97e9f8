//! The WebRTC seam: offer in, answer out, media to one viewer, keyframe requests back. Every
//! use of the `webrtc` crate lives under this module, so a later move to another WebRTC stack
//! stays local.

pub mod ingest;
pub mod ladder;
pub mod nack;
pub mod publish;
pub mod pull;
mod twcc;
/// The SDP checks live in `scopecast_shared::sdp` (pure, fuzzed without building the relay).
pub use scopecast_shared::sdp;
mod udp_mux;

use crate::config::IceConfig;
use crate::pipeline::ViewerCursor;
use crate::track::KeyframeReason;
use ladder::ViewerLadder;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use udp_mux::SessionMux;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_H264, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::dtls_transport::dtls_role::DTLSRole;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice::udp_network::UDPNetwork;
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::registry::Registry;
use webrtc::interceptor::report::sender::SenderReport;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::extension::playout_delay_extension::PlayoutDelayExtension;
use webrtc::rtp::extension::transport_cc_extension::TransportCcExtension;
use webrtc::rtp::extension::HeaderExtension;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocal;

/// Longest wait for our own ICE candidates (host candidates come in milliseconds).
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);
/// A session that has not connected by then is abandoned and closed.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// The RTP header extension that tells a receiver how long it may hold frames back.
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
/// H.264 Constrained Baseline 3.1, the profile every browser decodes.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// The same stream described as Baseline 3.1: what LiveKit's ingress accepts (it and Pion match
/// profile bytes exactly). Constrained Baseline is a subset of Baseline, so it is the same
/// bitstream; publish offers carry both.
const H264_BASELINE_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f";
/// Main and High 3.1: what an origin other than ours may send (passed through as it is).
const H264_MAIN_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f";
const H264_HIGH_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f";

#[derive(Debug, thiserror::Error)]
pub enum WebRtcError {
    #[error(transparent)]
    Offer(#[from] sdp::OfferError),
    #[error(transparent)]
    Answer(#[from] sdp::AnswerError),
    #[error("WebRTC: {0}")]
    Internal(#[from] webrtc::Error),
    #[error("cannot bind the WebRTC UDP port {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    #[error("the negotiated answer does not send video")]
    NoVideoInAnswer,
}

/// Shared by every session: the API (codecs, interceptors, ICE settings) and the UDP mux.
pub struct WebRtcEngine {
    /// Answers viewers' offers: H.264 42e01f, or Main or High for a camera passed through.
    api: API,
    /// Makes offers to WHIP publish targets: H.264 42e01f and 42001f.
    publish_api: API,
    /// Makes offers to WHEP servers to pull from: H.264 in the profiles browsers decode.
    pull_api: API,
    /// Answers WHIP publishers' offers: the same H.264, and Opus (accepted, then dropped).
    ingest_api: API,
    stun_servers: Vec<String>,
    turn_servers: Vec<crate::turn::TurnServer>,
    additional_hosts: Vec<String>,
    udp_port: u16,
}

/// Interfaces that are never a viewer's way in: containers, VM bridges.
fn is_virtual_interface(name: &str) -> bool {
    const PREFIXES: [&str; 12] = ["docker", "br-", "veth", "virbr", "vmnet", "vboxnet", "cni", "flannel", "cali", "podman", "lxcbr", "lxdbr"];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The crate's form of an ICE server, keeping only the URLs it can gather through: it speaks
/// TURN over UDP only (its TCP and TLS legs are unported), and a URL it cannot use would fail
/// the whole session.
fn rtc_ice_server(s: &crate::turn::IceServer) -> Option<RTCIceServer> {
    let urls: Vec<String> = s.urls.iter().filter(|u| u.starts_with("stun:") || (u.starts_with("turn:") && !u.ends_with("?transport=tcp"))).cloned().collect();
    if urls.is_empty() {
        return None;
    }
    Some(RTCIceServer { urls, username: s.username.clone().unwrap_or_default(), credential: s.credential.clone().unwrap_or_default() })
}

/// This machine's addresses on real interfaces (no loopback, containers or VM bridges): what
/// ICE advertises, and what a self-signed certificate names.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = webrtc::util::ifaces::ifaces()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !is_virtual_interface(&i.name))
        .filter_map(|i| i.addr.map(|a| a.ip()))
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
        .collect();
    out.dedup();
    out
}

impl WebRtcEngine {
    pub async fn new(ice: &IceConfig) -> Result<Self, WebRtcError> {
        // IPv4 only: a mux bound to 0.0.0.0 would still advertise IPv6 candidates, which
        // Chromium tries first, delaying the first frame by seconds.
        let bind = if ice.udp.is_ipv4() { ice.udp } else { std::net::SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), ice.udp.port()) };
        let socket = tokio::net::UdpSocket::bind(bind).await.map_err(|e| WebRtcError::Bind(ice.udp, e))?;
        let udp_port = socket.local_addr().map_err(|e| WebRtcError::Bind(ice.udp, e))?.port();
        let mux = SessionMux::new(socket).map_err(|e| WebRtcError::Bind(ice.udp, e))?;
        // Viewers and publish targets share the one UDP port; they differ only in the codecs
        // they speak.
        // Viewers: Main and High too, for cameras passed through in those profiles (the answer
        // then names the camera's profile; see `viewer_codec`).
        // And VP8, for browsers without H.264 (sent from the stream's VP8 renditions).
        let api = build_api(ice, bind, Arc::clone(&mux), &[(102, H264_FMTP), (104, H264_MAIN_FMTP), (105, H264_HIGH_FMTP)], Media::SendsWithVp8)?;
        let publish_api = build_api(ice, bind, Arc::clone(&mux), &[(102, H264_FMTP), (103, H264_BASELINE_FMTP)], Media::Sends)?;
        let all_h264 = [(102, H264_FMTP), (103, H264_BASELINE_FMTP), (104, H264_MAIN_FMTP), (105, H264_HIGH_FMTP)];
        let pull_api = build_api(ice, bind, Arc::clone(&mux), &all_h264, Media::Receives)?;
        // Constrained Baseline first: what a publisher picks from the answer is then what every
        // viewer's browser decodes under its own name.
        let ingest_api = build_api(ice, bind, mux, &all_h264, Media::ReceivesWithAudio)?;
        Ok(Self {
            api,
            publish_api,
            pull_api,
            ingest_api,
            stun_servers: ice.stun_servers.clone(),
            turn_servers: ice.turn.clone(),
            additional_hosts: ice.additional_hosts.clone(),
            udp_port,
        })
    }

    pub fn udp_port(&self) -> u16 {
        self.udp_port
    }

    /// ICE servers for one new session (players get them as Link headers; the relay uses the
    /// same ones): TURN credentials minted from a secret are fresh each time.
    pub fn ice_servers_for_session(&self) -> Vec<crate::turn::IceServer> {
        crate::turn::servers_for_session(&self.stun_servers, &self.turn_servers, crate::timing::unix_ms() / 1000)
    }

    /// Answers an offer with a session that sends the video of `ladder`'s chosen rendition
    /// once connected, gathering relay candidates through the TURN servers in `servers` (UDP
    /// to the TURN server; a viewer may reach the same server over TCP). `on_end` runs once
    /// when the session ends.
    pub async fn create_session(
        &self,
        offer: &str,
        servers: &[crate::turn::IceServer],
        ladder: Arc<ViewerLadder>,
        on_end: Box<dyn FnOnce() + Send>,
    ) -> Result<Session, WebRtcError> {
        let codec = sdp::check_offer(offer)?;
        if ladder.step(0).codec != crate::media::Codec::from(codec) {
            return Err(WebRtcError::Internal(webrtc::Error::new(format!("a {codec:?} offer for a ladder in {:?}", ladder.step(0).codec))));
        }
        let config = RTCConfiguration { ice_servers: servers.iter().filter_map(rtc_ice_server).collect(), ..Default::default() };
        let pc = Arc::new(self.api.new_peer_connection(config).await?);
        match self.negotiate(&pc, offer, ladder, on_end).await {
            Ok(session) => Ok(session),
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }

    async fn negotiate(
        &self,
        pc: &Arc<RTCPeerConnection>,
        offer: &str,
        ladder: Arc<ViewerLadder>,
        on_end: Box<dyn FnOnce() + Send>,
    ) -> Result<Session, WebRtcError> {
        // Every H.264 rendition but a passed-through camera's (which is alone on its ladder) is
        // the encoder's Constrained Baseline; VP8 has no profiles to name.
        let top = Arc::clone(&ladder.step(0).track);
        let capability = match ladder.step(0).codec {
            crate::media::Codec::H264 => viewer_capability(viewer_fmtp(top.profile(), offer)),
            crate::media::Codec::Vp8 => with_viewer_feedback(vp8_capability()),
        };
        let local_track = Arc::new(TrackLocalStaticRTP::new(capability.clone(), "video".into(), format!("scopecast-{}", top.name)));
        // The track must be added before the remote description, or the answer is not
        // sendonly and nothing is ever sent.
        let sender = pc.add_track(Arc::clone(&local_track) as Arc<dyn TrackLocal + Send + Sync>).await?;
        pc.set_remote_description(RTCSessionDescription::offer(offer.to_owned())?).await?;
        // Only the one profile in the answer, the one the frames are in. Set after the offer:
        // payload type 0 then takes the viewer's own number for it.
        if let Some(transceiver) = pc.get_transceivers().await.first() {
            transceiver.set_codec_preferences(vec![RTCRtpCodecParameters { capability, payload_type: 0, ..Default::default() }]).await?;
        }
        let answer = pc.create_answer(None).await?;
        let mut gathered = pc.gathering_complete_promise().await;
        pc.set_local_description(answer).await?;
        let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.recv()).await;
        let local = pc.local_description().await.ok_or(WebRtcError::NoVideoInAnswer)?;
        if !local.sdp.lines().any(|l| l.starts_with("m=video ") && !l.starts_with("m=video 0 ")) || !local.sdp.contains("a=sendonly") {
            return Err(WebRtcError::NoVideoInAnswer);
        }
        let extra_hosts = resolve_hosts(&self.additional_hosts).await;
        let answer = sdp::add_host_candidates(&local.sdp, &extra_hosts);

        let stats = Arc::new(ViewerStats::default());
        let closed = attach_media(pc, sender, local_track, Arc::clone(&ladder), on_end, Arc::clone(&stats), "WHEP session");
        let ufrag = offer.lines().find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:").map(str::to_owned));
        Ok(Session {
            pc: Arc::clone(pc),
            answer,
            remote: tokio::sync::Mutex::new(Remote { offer: offer.to_owned(), ufrag }),
            extra_hosts,
            closed,
            stats,
            ladder: Some(ladder),
        })
    }
}

/// Wires a connection that sends the video of `ladder`'s rendition on `track` (a viewer's or
/// a publish target's): media once connected, a keyframe after every reconnection, an RTCP
/// loop (the NACK responder and reports run inside it; PLI and FIR become throttled keyframe
/// requests; receiver reports and REMB move the viewer between renditions), and an end
/// (`on_end`, once) on failure, close, or no connection within [`CONNECT_DEADLINE`].
/// Counts into `stats`; returns the switch that stops the media.
fn attach_media(
    pc: &Arc<RTCPeerConnection>,
    sender: Arc<RTCRtpSender>,
    track: Arc<TrackLocalStaticRTP>,
    ladder: Arc<ViewerLadder>,
    on_end: Box<dyn FnOnce() + Send>,
    stats: Arc<ViewerStats>,
    what: &'static str,
) -> watch::Sender<bool> {
    let (closed_tx, closed_rx) = watch::channel(false);
    // RTCP: the NACK responder and receiver reports run inside read_rtcp, and PLI/FIR arrive there.
    {
        let ladder = Arc::clone(&ladder);
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            while let Ok((packets, _)) = sender.read_rtcp().await {
                ladder.on_rtcp(&packets);
                for p in packets {
                    let any = p.as_any();
                    if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                        let source = ladder.current_track();
                        stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                        source.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                        source.request_keyframe(KeyframeReason::ViewerRequest);
                    }
                }
            }
        });
    }

    let on_end = std::sync::Mutex::new(Some(on_end));
    let end = Arc::new(move || {
        if let Some(f) = on_end.lock().unwrap_or_else(|p| p.into_inner()).take() {
            f();
        }
    });
    {
        let track = Arc::clone(&track);
        let ladder = Arc::clone(&ladder);
        let closed_rx = closed_rx.clone();
        let stats = Arc::clone(&stats);
        let end = Arc::clone(&end);
        let started = std::sync::atomic::AtomicBool::new(false);
        pc.on_peer_connection_state_change(Box::new(move |state| {
            match state {
                RTCPeerConnectionState::Connected if !started.swap(true, Ordering::Relaxed) => {
                    tokio::spawn(send_media(Arc::clone(&track), Arc::clone(&ladder), closed_rx.clone(), Arc::clone(&stats)));
                }
                // Back after an ICE restart or a path change: what was sent meanwhile is
                // lost, so the picture needs a keyframe (throttled for the other viewers).
                RTCPeerConnectionState::Connected => {
                    ladder.current_track().request_keyframe(KeyframeReason::ViewerRequest);
                }
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => end(),
                _ => {}
            }
            Box::pin(async {})
        }));
    }
    // Abandoned sessions (a POST and nothing more) are closed, not leaked.
    {
        let pc = Arc::clone(pc);
        let end = Arc::clone(&end);
        let mut closed_rx = closed_rx.clone();
        tokio::spawn(async move {
            let connected = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if pc.connection_state() == RTCPeerConnectionState::Connected {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = connected => {}
                _ = closed_rx.wait_for(|c| *c) => {}
                _ = tokio::time::sleep(CONNECT_DEADLINE) => {
                    tracing::info!("closing a {what} that never connected");
                    end();
                }
            }
        });
    }
    closed_tx
}

/// Which way a kind of session's media goes, which decides its interceptors.
#[derive(Clone, Copy, PartialEq)]
enum Media {
    /// Publish targets: the relay only sends.
    Sends,
    /// Viewers: the relay only sends, H.264 or VP8.
    SendsWithVp8,
    /// Pulled streams: the relay only receives video.
    Receives,
    /// WHIP publishers: video and audio (the audio is dropped) in.
    ReceivesWithAudio,
}

/// One API over the shared UDP mux: the given H.264 variants (and Opus for WHIP publishers),
/// playout delay, the interceptors for the media's direction and the ICE settings every
/// session uses.
fn build_api(ice: &IceConfig, bind: std::net::SocketAddr, mux: Arc<SessionMux>, h264: &[(u8, &str)], direction: Media) -> Result<API, WebRtcError> {
    let mut media = MediaEngine::default();
    for &(payload_type, fmtp) in h264 {
        media.register_codec(RTCRtpCodecParameters { capability: h264_capability_with(fmtp), payload_type, ..Default::default() }, RTPCodecType::Video)?;
    }
    if direction == Media::ReceivesWithAudio {
        let opus = RTCRtpCodecCapability {
            mime_type: webrtc::api::media_engine::MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        };
        media.register_codec(RTCRtpCodecParameters { capability: opus, payload_type: 111, ..Default::default() }, RTPCodecType::Audio)?;
    }
    if direction == Media::SendsWithVp8 {
        media.register_codec(RTCRtpCodecParameters { capability: vp8_capability(), payload_type: 96, ..Default::default() }, RTPCodecType::Video)?;
    }
    // Playout delay (0, 0): libwebrtc then renders each frame as soon as it is decoded,
    // skipping its jitter buffer's target delay, render delay and smoothing (about 20 ms in
    // Chromium). Negotiated only with browsers that offer it; the crate writes it only then.
    media.register_header_extension(RTCRtpHeaderExtensionCapability { uri: PLAYOUT_DELAY_URI.to_owned() }, RTPCodecType::Video, None)?;
    if direction == Media::SendsWithVp8 {
        // Transport-wide sequence numbers: viewers report each packet's arrival, which
        // probes a viewer's link before a step up (`twcc.rs`).
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: webrtc::sdp::extmap::TRANSPORT_CC_URI.to_owned() },
            RTPCodecType::Video,
            None,
        )?;
    }
    let registry = match direction {
        Media::Receives | Media::ReceivesWithAudio => register_default_interceptors(Registry::new(), &mut media)?,
        Media::Sends | Media::SendsWithVp8 => sending_interceptors(&mut media),
    };

    let mut settings = SettingEngine::default();
    settings.set_udp_network(UDPNetwork::Muxed(mux));
    settings.set_network_types(vec![NetworkType::Udp4]);
    settings.set_include_loopback_candidate(ice.include_loopback || bind.ip().is_loopback());
    // A socket bound to one address receives nothing sent to the others: advertise only it,
    // or peers spend their first checks (and seconds) on candidates that cannot answer.
    let bound_ip = bind.ip();
    settings.set_ip_filter(Box::new(move |ip| bound_ip.is_unspecified() || ip == bound_ip));
    settings.set_interface_filter(Box::new(|name: &str| !is_virtual_interface(name)));
    // Chromium hides its host IPs behind .local names; resolving them can stall. Ignore
    // them: its connectivity checks reach us anyway and become peer-reflexive candidates.
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    // Answer `a=setup:passive`: the player, which finishes ICE last (it nominates), starts
    // DTLS, and by then our DTLS transport is usually listening. As the DTLS client we sent
    // our first flight the moment our side connected, before a webrtc-crate peer's DTLS was
    // listening; it dropped the packet and the handshake waited for the 1 s retransmission.
    // (Chromium keeps an early ClientHello either way.)
    settings.set_answering_dtls_role(DTLSRole::Server)?;
    // Consent freshness: notice a vanished viewer in seconds, not half a minute.
    settings.set_ice_timeouts(Some(Duration::from_secs(4)), Some(Duration::from_secs(10)), Some(Duration::from_secs(1)));

    Ok(APIBuilder::new().with_media_engine(media).with_interceptor_registry(registry).with_setting_engine(settings).build())
}

/// A sending session's interceptors: the NACK responder (`nack.rs`: resends what a viewer
/// lost while that can still help, within a budget) and sender reports, no more. The crate's defaults add a NACK generator and a TWCC
/// receiver, each a 100 ms ticker per session that has nothing to do when no media comes in:
/// at 10 viewers, 200 of the relay's wake-ups a second.
fn sending_interceptors(media: &mut MediaEngine) -> Registry {
    for parameter in ["", "pli"] {
        media.register_feedback(RTCPFeedback { typ: "nack".to_owned(), parameter: parameter.to_owned() }, RTPCodecType::Video);
    }
    let mut registry = Registry::new();
    registry.add(Box::new(nack::BoundedResponderBuilder));
    registry.add(Box::new(SenderReport::builder()));
    registry
}

/// The H.264 a viewer's answer names: the camera's profile (Main or High) where a
/// passed-through camera's frames are in it and the viewer offered it, else Constrained
/// Baseline, which is what the encoder makes (and what every browser offers; a decoder given
/// Main or High under that name decodes it all the same).
fn viewer_fmtp(profile_idc: Option<u8>, offer: &str) -> &'static str {
    let wanted = match profile_idc {
        Some(77) => Some((H264_MAIN_FMTP, "4d00")),
        Some(100) => Some((H264_HIGH_FMTP, "6400")),
        _ => None,
    };
    match wanted {
        Some((fmtp, profile)) if sdp::offers_h264_profile(offer, profile) => fmtp,
        _ => H264_FMTP,
    }
}

fn h264_capability() -> RTCRtpCodecCapability {
    h264_capability_with(H264_FMTP)
}

/// What a viewer's answer names: also transport-cc, so the browser reports when each packet
/// arrived (what probes of its link are judged by), and goog-remb, so a browser that does
/// not do transport-wide feedback sends its receive-side estimate of the link (REMB, shown
/// in the API).
fn viewer_capability(fmtp: &str) -> RTCRtpCodecCapability {
    with_viewer_feedback(h264_capability_with(fmtp))
}

fn with_viewer_feedback(mut capability: RTCRtpCodecCapability) -> RTCRtpCodecCapability {
    capability.rtcp_feedback.push(RTCPFeedback { typ: "goog-remb".into(), parameter: String::new() });
    capability.rtcp_feedback.push(RTCPFeedback { typ: "transport-cc".into(), parameter: String::new() });
    capability
}

/// VP8 (RFC 7741) with the same feedback as H.264: NACK, PLI and FIR.
fn vp8_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability { mime_type: MIME_TYPE_VP8.to_owned(), sdp_fmtp_line: String::new(), ..h264_capability_with("") }
}

fn h264_capability_with(fmtp: &str) -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: fmtp.to_owned(),
        rtcp_feedback: vec![
            RTCPFeedback { typ: "nack".into(), parameter: String::new() },
            RTCPFeedback { typ: "nack".into(), parameter: "pli".into() },
            RTCPFeedback { typ: "ccm".into(), parameter: "fir".into() },
        ],
    }
}

async fn resolve_hosts(hosts: &[String]) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for host in hosts {
        if let Ok(ip) = host.parse::<IpAddr>() {
            ips.push(ip);
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(1), tokio::net::lookup_host((host.as_str(), 0))).await {
            Ok(Ok(addrs)) => ips.extend(addrs.map(|a| a.ip()).filter(IpAddr::is_ipv4)),
            _ => tracing::warn!(host, "cannot resolve an additional ICE host"),
        }
    }
    ips
}

/// Per-viewer counters.
#[derive(Debug, Default)]
pub struct ViewerStats {
    pub frames_sent: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub keyframe_requests: AtomicU64,
}

/// One viewer's peer connection.
pub struct Session {
    pc: Arc<RTCPeerConnection>,
    pub answer: String,
    /// The viewer's current offer and ICE username fragment: an ICE restart renegotiates from
    /// it. The lock also keeps two restarts from interleaving.
    remote: tokio::sync::Mutex<Remote>,
    extra_hosts: Vec<IpAddr>,
    closed: watch::Sender<bool>,
    pub stats: Arc<ViewerStats>,
    /// A viewer's renditions and which it gets (`None` for a WHIP publisher's session).
    pub ladder: Option<Arc<ViewerLadder>>,
}

struct Remote {
    offer: String,
    ufrag: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrickleError {
    #[error("an ICE restart needs both a=ice-ufrag and a=ice-pwd")]
    RestartIncomplete,
    #[error("an ICE restart needs If-Match with the session's ETag (or *)")]
    RestartWithoutIfMatch,
    #[error("ICE restart failed: {0}")]
    RestartFailed(String),
    #[error("candidate rejected: {0}")]
    Candidate(String),
}

impl Session {
    /// Applies a trickle PATCH: candidates for the current ICE session, or, when the fragment
    /// carries new credentials, an ICE restart (RFC 9725 4.4.2). A restart returns the answer
    /// fragment: the relay's new credentials and candidates.
    /// `if_match`: the request named the session's ETag, which a restart requires.
    pub async fn patch(&self, frag: &sdp::IceFragment, if_match: bool) -> Result<Option<String>, TrickleError> {
        let mut remote = self.remote.lock().await;
        let restart = matches!((&frag.ufrag, &remote.ufrag), (Some(new), Some(current)) if new != current);
        if restart && !if_match {
            return Err(TrickleError::RestartWithoutIfMatch);
        }
        let answer = if restart {
            let (Some(ufrag), Some(pwd)) = (&frag.ufrag, &frag.pwd) else { return Err(TrickleError::RestartIncomplete) };
            let offer = sdp::restart_offer(&remote.offer, ufrag, pwd);
            let fail = |e: webrtc::Error| TrickleError::RestartFailed(e.to_string());
            // A renegotiation with new remote credentials restarts the crate's ICE agent: new
            // local credentials, candidates gathered again, checks from scratch. The DTLS and
            // SRTP sessions, the track, its SSRC and sequence numbers all carry on.
            self.pc.set_remote_description(RTCSessionDescription::offer(offer.clone()).map_err(fail)?).await.map_err(fail)?;
            let answer = self.pc.create_answer(None).await.map_err(fail)?;
            let mut gathered = self.pc.gathering_complete_promise().await;
            self.pc.set_local_description(answer).await.map_err(fail)?;
            let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.recv()).await;
            let local = self.pc.local_description().await.ok_or_else(|| TrickleError::RestartFailed("no local description".into()))?;
            remote.offer = offer;
            remote.ufrag = Some(ufrag.clone());
            Some(sdp::restart_answer_fragment(&sdp::add_host_candidates(&local.sdp, &self.extra_hosts)))
        } else {
            None
        };
        self.add_candidates(frag).await?;
        Ok(answer)
    }

    async fn add_candidates(&self, frag: &sdp::IceFragment) -> Result<(), TrickleError> {
        for candidate in &frag.candidates {
            if candidate.contains(".local ") {
                continue; // mDNS names are ignored by design (see WebRtcEngine::new).
            }
            let init = RTCIceCandidateInit { candidate: candidate.clone(), sdp_mid: frag.mid.clone(), sdp_mline_index: Some(0), username_fragment: None };
            self.pc.add_ice_candidate(init).await.map_err(|e| TrickleError::Candidate(e.to_string()))?;
        }
        Ok(())
    }

    pub fn state(&self) -> RTCPeerConnectionState {
        self.pc.connection_state()
    }

    /// Becomes true when the session is closed.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Stops media and closes the peer connection.
    pub async fn close(&self) {
        // send_replace: stored even with no receiver left, for anyone who subscribes later.
        self.closed.send_replace(true);
        let _ = self.pc.close().await;
    }
}

/// Sends the chosen rendition's frames to one viewer until the session closes. Each viewer has
/// its own cursor into a track's bounded ring: one that falls behind skips to the next
/// keyframe and never holds up the producer or the other viewers. A joiner of a
/// passed-through track first gets the frames since its last keyframe, paced, then the live
/// ones after them. When the ladder chooses another rendition, the viewer keeps getting the
/// old one until the new one's keyframe (asked for at once), then only the new one: same
/// SSRC, sequence numbers and timestamps running on, nothing renegotiated.
async fn send_media(track: Arc<TrackLocalStaticRTP>, ladder: Arc<ViewerLadder>, mut closed: watch::Receiver<bool>, stats: Arc<ViewerStats>) {
    let mut target = ladder.subscribe();
    let mut current = *target.borrow_and_update();
    let reader = ladder.step(current).track.attach();
    ladder.switched(current);
    let (mut _guard, mut frames) = (reader.guard, reader.live);
    let mut cursor = ViewerCursor::new(rand::random());
    for frame in &reader.backlog {
        if *closed.borrow() {
            return;
        }
        if !cursor.admit(frame) {
            continue;
        }
        if !udp_mux::held_sends(send_frame(&track, &ladder, &mut cursor, frame)).await {
            return;
        }
        stats.frames_sent.fetch_add(1, Ordering::Relaxed);
        // Paced at about 20 Mbit/s: at once on a LAN, without a burst that a slow link drops.
        tokio::time::sleep(Duration::from_micros(frame.bytes as u64 * 8 / 20)).await;
    }
    let mut after = reader.after;
    // The rendition being moved to, read until its first keyframe.
    let mut pending: Option<(usize, crate::track::Reader)> = None;
    // A probe of the viewer's link running (`twcc.rs`): padding paced between the frames.
    let mut probe: Option<Padding> = None;
    loop {
        let padding_due = async {
            match &probe {
                Some(p) => tokio::time::sleep_until((p.started + PADDING_TICK * p.ticks()).into()).await,
                None => std::future::pending().await,
            }
        };
        let next_pending = async {
            match pending.as_mut() {
                Some((_, r)) => r.live.recv().await,
                None => std::future::pending().await,
            }
        };
        let frame = tokio::select! {
            r = frames.recv() => Ok(r),
            r = next_pending => {
                match r {
                    Ok(f) if f.keyframe => {
                        let Some((index, reader)) = pending.take() else { continue };
                        (current, _guard, frames, after) = (index, reader.guard, reader.live, None);
                        ladder.switched(current);
                        cursor.switched(&f);
                        Ok(Ok(f))
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        pending = None;
                        continue;
                    }
                }
            }
            changed = target.changed() => {
                if changed.is_err() {
                    return;
                }
                let wanted = *target.borrow_and_update();
                crate::track::follow_rendition(&mut pending, wanted, current, |i| &ladder.step(i).track);
                continue;
            }
            _ = padding_due => Err(PaddingDue),
            _ = closed.wait_for(|c| *c) => return,
        };
        // Sent here, not in its branch: the select's output holds a non-Send guard.
        let frame = match frame {
            Ok(frame) => frame,
            Err(PaddingDue) => {
                let Some(p) = probe.as_mut() else { continue };
                let due = p.due(Instant::now());
                if !udp_mux::held_sends(send_padding(&track, &ladder, &mut cursor, due)).await {
                    return;
                }
                p.sent += due;
                if p.sent >= p.total {
                    ladder.end_probe();
                    probe = None;
                }
                continue;
            }
        };
        let frame = match frame {
            Ok(f) if after.is_some_and(|after| f.index <= after) => continue, // sent from the backlog
            Ok(f) => f,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                stats.frames_dropped.fetch_add(n, Ordering::Relaxed);
                cursor.lagged();
                ladder.current_track().request_keyframe(KeyframeReason::ViewerRequest);
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if !cursor.admit(&frame) {
            stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // A frame's packets leave together, as GSO batches; a probe of the viewer's link, when
        // one is due, right after them (it must not delay the picture).
        if !udp_mux::held_sends(send_frame(&track, &ladder, &mut cursor, &frame)).await {
            return;
        }
        if probe.is_none() {
            probe = ladder.take_probe().map(|bps| Padding { started: Instant::now(), bps, total: twcc::probe_packets(bps), sent: 0 });
        }
        if let Some(t) = &frame.timing {
            t.mark_sent();
        }
        ladder.last_sequence.store(cursor.last_sequence(), Ordering::Relaxed);
        stats.frames_sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes one frame's packets, numbered for this viewer; false once the viewer is gone.
async fn send_frame(track: &TrackLocalStaticRTP, ladder: &ViewerLadder, cursor: &mut ViewerCursor, frame: &crate::pipeline::RtpFrame) -> bool {
    let mut bytes = 0;
    for packet in &frame.packets {
        let packet = cursor.stamp(packet);
        let size = packet.payload.len() + RTP_OVERHEAD;
        bytes += size;
        let transport = ladder.transport_sequence(size);
        if !write_packet(track, &packet, transport).await {
            return false;
        }
    }
    ladder.packets_sent.fetch_add(frame.packets.len() as u64, Ordering::Relaxed);
    ladder.media_bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    true
}

/// Bytes a packet carries besides its payload: RTP header and extensions, SRTP's tag.
const RTP_OVERHEAD: usize = 12 + 12 + 10;

/// The media task's wake-up for the next padding packets.
struct PaddingDue;

/// Padding sent out at a steady rate, `PADDING_TICK` apart.
struct Padding {
    started: Instant,
    bps: u64,
    total: usize,
    sent: usize,
}

const PADDING_TICK: Duration = Duration::from_millis(5);

impl Padding {
    /// Ticks until the next packet is due (its send time, in ticks from the start).
    fn ticks(&self) -> u32 {
        let at = self.sent as f64 * twcc::PROBE_PACKET_BYTES as f64 * 8.0 / self.bps.max(1) as f64;
        (at / PADDING_TICK.as_secs_f64()).floor() as u32
    }

    /// Packets due by `now` (at least one: it was woken for one).
    fn due(&self, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.started).as_secs_f64();
        let by_now = (elapsed * self.bps as f64 / 8.0 / twcc::PROBE_PACKET_BYTES as f64).floor() as usize + 1;
        by_now.clamp(self.sent + 1, self.total) - self.sent
    }
}

/// Writes `packets` padding packets (`twcc.rs`); false once the viewer is gone.
async fn send_padding(track: &TrackLocalStaticRTP, ladder: &ViewerLadder, cursor: &mut ViewerCursor, packets: usize) -> bool {
    for _ in 0..packets {
        let Some((sequence, timestamp)) = cursor.padding() else { return true };
        let packet = twcc::probe_packet(sequence, timestamp);
        let transport = ladder.transport_sequence(webrtc::util::MarshalSize::marshal_size(&packet) + 10);
        if !write_packet(track, &packet, transport).await {
            return false;
        }
    }
    ladder.packets_sent.fetch_add(packets as u64, Ordering::Relaxed);
    true
}

async fn write_packet(track: &TrackLocalStaticRTP, packet: &webrtc::rtp::packet::Packet, transport: u16) -> bool {
    let extensions = [
        // Minimum and maximum delay 0: render as soon as decoded (skipped when not negotiated).
        HeaderExtension::PlayoutDelay(PlayoutDelayExtension::new(0, 0)),
        HeaderExtension::TransportCc(TransportCcExtension { transport_sequence: transport }),
    ];
    if let Err(e) = track.write_rtp_with_extensions(packet, &extensions).await {
        tracing::debug!("viewer write failed: {e}");
        return false;
    }
    true
}
