//! Pure checks of SDP from peers: a player's offer, a publish target's answer, trickle-ICE
//! fragments. No sockets, no peer connection, so the WHEP error table is testable without WebRTC.

use sdp::description::media::MediaDescription;
use sdp::description::session::SessionDescription;

/// Parses SDP (the error as text) and returns it with the index of its first video section.
fn parse_with_video(sdp: &str) -> Result<(SessionDescription, Option<usize>), String> {
    let mut reader = std::io::Cursor::new(sdp.as_bytes());
    let desc = SessionDescription::unmarshal(&mut reader).map_err(|e| e.to_string())?;
    let video = desc.media_descriptions.iter().position(|m| m.media_name.media == "video");
    Ok((desc, video))
}

/// The section's `rtpmap` entries: payload type and codec name.
fn rtpmap(media: &MediaDescription) -> Vec<(&str, &str)> {
    media
        .attributes
        .iter()
        .filter(|a| a.key == "rtpmap")
        .filter_map(|a| a.value.as_deref()?.split_once(' ').map(|(pt, codec)| (pt, codec.split('/').next().unwrap_or(""))))
        .collect()
}

/// The direction attribute that keeps the section from receiving, if any.
fn not_receiving(media: &MediaDescription) -> Option<&'static str> {
    ["sendonly", "inactive"].into_iter().find(|dir| media.attributes.iter().any(|a| a.key == *dir))
}

/// Codec names for an error message: "nothing" when there are none.
fn codec_list(names: &[&str]) -> String {
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("the body is not a valid SDP offer: {0}")]
    Malformed(String),
    #[error("the offer has no video section")]
    NoVideo,
    #[error("the offer's video section offers no H.264 with packetization-mode=1 (offered: {0})")]
    NoH264(String),
    #[error("the offer's video section offers neither H.264 with packetization-mode=1 nor VP8 (offered: {0})")]
    NoH264OrVp8(String),
    #[error("the offer does not ask to receive video (direction {0})")]
    NotReceiving(String),
    #[error("the offer does not send video (direction {0})")]
    NotSending(String),
}

/// The video codec a viewer is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerCodec {
    H264,
    /// For browsers that offer no H.264 (Firefox without its OpenH264 plugin).
    Vp8,
}

/// Checks that a viewer's offer is SDP with a video section that can receive H.264 or else
/// VP8, and says which: H.264 wherever offered (the stream's own encoding, passed-through
/// cameras, every rendition), VP8 only for browsers without it.
pub fn check_offer(sdp: &str) -> Result<ViewerCodec, OfferError> {
    let (codec, video) = match check_h264_offer(sdp) {
        Ok(video) => (ViewerCodec::H264, video),
        Err(OfferError::NoH264(offered)) => {
            let (mut desc, video) = parse_with_video(sdp).map_err(OfferError::Malformed)?;
            let video = desc.media_descriptions.swap_remove(video.ok_or(OfferError::NoVideo)?);
            if !rtpmap(&video).iter().any(|(_, name)| name.eq_ignore_ascii_case("vp8")) {
                return Err(OfferError::NoH264OrVp8(offered));
            }
            (ViewerCodec::Vp8, video)
        }
        Err(e) => return Err(e),
    };
    match not_receiving(&video) {
        Some(dir) => Err(OfferError::NotReceiving(dir.into())),
        None => Ok(codec),
    }
}

/// Checks that a WHIP publisher's offer is SDP with a video section that sends H.264.
pub fn check_publisher_offer(sdp: &str) -> Result<(), OfferError> {
    let video = check_h264_offer(sdp)?;
    match ["recvonly", "inactive"].into_iter().find(|dir| video.attributes.iter().any(|a| a.key == *dir)) {
        Some(dir) => Err(OfferError::NotSending(dir.into())),
        None => Ok(()),
    }
}

/// What both kinds of offer need: SDP, a video section, H.264 with packetization-mode 1.
/// Returns the video section.
fn check_h264_offer(sdp: &str) -> Result<MediaDescription, OfferError> {
    let (mut desc, video) = parse_with_video(sdp).map_err(OfferError::Malformed)?;
    let video = desc.media_descriptions.swap_remove(video.ok_or(OfferError::NoVideo)?);
    let codecs = rtpmap(&video);
    let h264_pts: Vec<&str> = codecs.iter().filter(|(_, name)| name.eq_ignore_ascii_case("h264")).map(|(pt, _)| *pt).collect();
    let mode1 = video
        .attributes
        .iter()
        .filter(|a| a.key == "fmtp")
        .filter_map(|a| a.value.as_deref())
        .any(|v| v.split_once(' ').is_some_and(|(pt, params)| h264_pts.contains(&pt) && params.replace(' ', "").contains("packetization-mode=1")));
    if !mode1 {
        let mut offered: Vec<&str> = codecs.iter().map(|(_, name)| *name).collect();
        offered.dedup();
        return Err(OfferError::NoH264(codec_list(&offered)));
    }
    Ok(video)
}

/// Whether our answer to a publisher accepts its video: a video section not rejected (port 0)
/// that receives.
pub fn answer_receives_video(sdp: &str) -> bool {
    let Ok((desc, Some(video))) = parse_with_video(sdp) else { return false };
    let video = &desc.media_descriptions[video];
    video.media_name.port.value != 0 && video.attributes.iter().any(|a| a.key == "recvonly" || a.key == "sendrecv")
}

/// Whether an offer's video takes H.264 (packetization-mode 1) whose profile-level-id starts
/// with `profile` (profile_idc and constraint flags, hex: "64" + "00" for High).
pub fn offers_h264_profile(sdp: &str, profile: &str) -> bool {
    let Ok((desc, Some(video))) = parse_with_video(sdp) else { return false };
    let video = &desc.media_descriptions[video];
    let h264_pts: Vec<&str> = rtpmap(video).iter().filter(|(_, name)| name.eq_ignore_ascii_case("h264")).map(|(pt, _)| *pt).collect();
    video.attributes.iter().filter(|a| a.key == "fmtp").filter_map(|a| a.value.as_deref()).any(|v| {
        let Some((pt, params)) = v.split_once(' ') else { return false };
        let params = params.replace(' ', "");
        h264_pts.contains(&pt)
            && params.contains("packetization-mode=1")
            && params.split(';').filter_map(|p| p.strip_prefix("profile-level-id=")).any(|id| id.to_ascii_lowercase().starts_with(profile))
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the answer is not valid SDP: {0}")]
    Malformed(String),
    #[error("the answer has no video section")]
    NoVideo,
    #[error("the answer rejects our video (port 0): the target takes no H.264 with packetization-mode=1")]
    Rejected,
    #[error("the answer's video takes no H.264 (it answered {0})")]
    NoH264(String),
    #[error("the answer does not receive video (direction {0})")]
    NotReceiving(String),
    #[error("the answer does not send video (direction {0})")]
    NotSending(String),
}

/// Checks a publish target's answer to our sendonly H.264 offer: a video section it accepts,
/// with H.264, in a direction that receives.
pub fn check_publish_answer(sdp: &str) -> Result<(), AnswerError> {
    check_answer(sdp, ["sendonly", "inactive"], AnswerError::NotReceiving)
}

/// Checks a WHEP server's answer to our recvonly offer (relay chaining): a video section it
/// accepts, with H.264, in a direction that sends.
pub fn check_pull_answer(sdp: &str) -> Result<(), AnswerError> {
    check_answer(sdp, ["recvonly", "inactive"], AnswerError::NotSending)
}

/// The checks both answers share; `wrong_direction` names the error for a direction in `wrong`.
fn check_answer(sdp: &str, wrong: [&str; 2], wrong_direction: fn(String) -> AnswerError) -> Result<(), AnswerError> {
    let (desc, video) = parse_with_video(sdp).map_err(AnswerError::Malformed)?;
    let video = &desc.media_descriptions[video.ok_or(AnswerError::NoVideo)?];
    if video.media_name.port.value == 0 {
        return Err(AnswerError::Rejected);
    }
    let codecs: Vec<&str> = rtpmap(video).into_iter().map(|(_, name)| name).collect();
    if !codecs.iter().any(|c| c.eq_ignore_ascii_case("h264")) {
        return Err(AnswerError::NoH264(codec_list(&codecs)));
    }
    match wrong.into_iter().find(|dir| video.attributes.iter().any(|a| a.key == *dir)) {
        Some(dir) => Err(wrong_direction(dir.into())),
        None => Ok(()),
    }
}

/// A trickle-ICE SDP fragment (RFC 8840) as sent by WHEP PATCH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IceFragment {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    pub mid: Option<String>,
    /// Candidate attribute values (without the `a=` prefix), e.g. `candidate:1 1 udp ...`.
    pub candidates: Vec<String>,
    pub end_of_candidates: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("line {0} is not an SDP attribute line")]
    NotSdp(usize),
    #[error("candidate on line {0} is malformed")]
    BadCandidate(usize),
    #[error("the fragment is empty")]
    Empty,
}

/// Parses a fragment. Unknown attributes are ignored; lines that are not SDP are an error.
pub fn parse_fragment(text: &str) -> Result<IceFragment, FragmentError> {
    let mut frag = IceFragment::default();
    let mut lines = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        lines += 1;
        let bytes = line.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
            return Err(FragmentError::NotSdp(i + 1));
        }
        let Some(attr) = line.strip_prefix("a=") else { continue };
        let (key, value) = attr.split_once(':').unwrap_or((attr, ""));
        match key {
            "ice-ufrag" => frag.ufrag = Some(value.to_owned()),
            "ice-pwd" => frag.pwd = Some(value.to_owned()),
            "mid" => frag.mid = Some(value.to_owned()),
            "end-of-candidates" => frag.end_of_candidates = true,
            "candidate" => {
                // foundation component transport priority address port "typ" type ...
                let fields: Vec<&str> = value.split_whitespace().collect();
                let valid = fields.len() >= 8
                    && fields[1].parse::<u16>().is_ok()
                    && fields[3].parse::<u32>().is_ok()
                    && fields[5].parse::<u16>().is_ok()
                    && fields[6] == "typ";
                if !valid {
                    return Err(FragmentError::BadCandidate(i + 1));
                }
                frag.candidates.push(attr.to_owned());
            }
            _ => {}
        }
    }
    if lines == 0 {
        return Err(FragmentError::Empty);
    }
    Ok(frag)
}

/// Adds host candidates for extra addresses (NAT 1:1, port forwarding) to an answer, on the
/// same port as the relay's own candidates. The peer's checks to them arrive on the real
/// interface and become peer-reflexive pairs, so nothing else needs to know.
pub fn add_host_candidates(answer: &str, ips: &[std::net::IpAddr]) -> String {
    let Some(port) = answer.lines().find_map(|l| {
        let f: Vec<&str> = l.strip_prefix("a=candidate:")?.split_whitespace().collect();
        (f.len() > 7 && f[2].eq_ignore_ascii_case("udp") && f[6] == "typ").then(|| f[5].to_owned())
    }) else {
        return answer.to_owned();
    };
    let mut out = String::with_capacity(answer.len() + ips.len() * 80);
    let mut inserted = false;
    let lines: Vec<&str> = answer.split("\r\n").collect();
    let last_candidate = lines.iter().rposition(|l| l.starts_with("a=candidate:"));
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str(line);
        if Some(i) == last_candidate && !inserted {
            for (n, ip) in ips.iter().enumerate() {
                // Host-type priority, below the real interfaces' so a LAN path is preferred.
                let priority = (126u32 << 24) | ((60_000 - n as u32) << 8) | 255;
                out.push_str(&format!("\r\na=candidate:extra{n} 1 udp {priority} {ip} {port} typ host"));
            }
            inserted = true;
        }
    }
    out
}

/// The offer an ICE restart amounts to (RFC 8840's PATCH carries only the new credentials and
/// candidates): the session's offer with the new ufrag and pwd, without the old candidates,
/// and a higher session version, as a renegotiation requires.
pub fn restart_offer(offer: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = Vec::new();
    for line in offer.split("\r\n").flat_map(|l| l.split('\n')) {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            out.push(format!("a=ice-ufrag:{ufrag}"));
        } else if line.starts_with("a=ice-pwd:") {
            out.push(format!("a=ice-pwd:{pwd}"));
        } else if let Some(origin) = line.strip_prefix("o=") {
            // o=<user> <sess-id> <sess-version> <nettype> <addrtype> <address>
            let mut f: Vec<String> = origin.split(' ').map(str::to_owned).collect();
            if let Some(v) = f.get_mut(2) {
                *v = v.parse::<u64>().map_or_else(|_| "2".to_owned(), |n| n.saturating_add(1).to_string());
            }
            out.push(format!("o={}", f.join(" ")));
        } else {
            out.push(line.to_owned());
        }
    }
    out.join("\r\n") + "\r\n"
}

/// The answer to an ICE restart as a trickle-ice-sdpfrag body: the new ufrag and pwd, the
/// video section's mid, and the candidates of the renegotiated local description.
pub fn restart_answer_fragment(local: &str) -> String {
    let attr = |name: &str| local.lines().find_map(|l| l.trim_end().strip_prefix(name).map(str::to_owned));
    let mut out = String::new();
    if let (Some(ufrag), Some(pwd)) = (attr("a=ice-ufrag:"), attr("a=ice-pwd:")) {
        out.push_str(&format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n"));
    }
    out.push_str("m=video 9 UDP/TLS/RTP/SAVPF 0\r\n");
    if let Some(mid) = attr("a=mid:") {
        out.push_str(&format!("a=mid:{mid}\r\n"));
    }
    for line in local.lines().map(str::trim_end).filter(|l| l.starts_with("a=candidate:")) {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("a=end-of-candidates\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ice_restart_becomes_a_renegotiated_offer_and_its_answer_a_fragment() {
        let offer = "v=0\r\no=- 42 7 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-ufrag:old1\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=ice-pwd:oldpassword\r\na=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\na=end-of-candidates\r\na=recvonly\r\n";
        let restarted = restart_offer(offer, "new2", "newpassword0123456789ab");
        assert!(restarted.contains("o=- 42 8 IN IP4 127.0.0.1\r\n"), "{restarted}");
        assert!(restarted.contains("a=ice-ufrag:new2\r\n") && restarted.contains("a=ice-pwd:newpassword0123456789ab\r\n"));
        assert!(!restarted.contains("old") && !restarted.contains("a=candidate") && !restarted.contains("end-of-candidates"));
        assert!(restarted.contains("a=recvonly") && restarted.ends_with("\r\n"));

        let local = "v=0\r\na=ice-ufrag:RELAYNEW\r\na=ice-pwd:relaypwd\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=candidate:9 1 udp 2130706431 10.0.0.2 8189 typ host\r\na=sendonly\r\n";
        let frag = restart_answer_fragment(local);
        let parsed = parse_fragment(&frag).expect("our own fragment parses");
        assert_eq!(parsed.ufrag.as_deref(), Some("RELAYNEW"));
        assert_eq!(parsed.pwd.as_deref(), Some("relaypwd"));
        assert_eq!(parsed.mid.as_deref(), Some("0"));
        assert_eq!(parsed.candidates, vec!["candidate:9 1 udp 2130706431 10.0.0.2 8189 typ host".to_owned()]);
        assert!(parsed.end_of_candidates);
    }

    #[test]
    fn an_offer_is_searched_for_an_h264_profile() {
        assert!(offers_h264_profile(CHROME_LIKE_OFFER, "42e0"));
        assert!(!offers_h264_profile(CHROME_LIKE_OFFER, "6400"), "no High offered");
        let high = CHROME_LIKE_OFFER.replace(
            "a=rtpmap:102 H264/90000\r\n",
            "a=rtpmap:102 H264/90000\r\na=rtpmap:104 H264/90000\r\na=fmtp:104 packetization-mode=0;profile-level-id=64001f\r\n",
        );
        assert!(!offers_h264_profile(&high, "6400"), "High only in packetization-mode 0");
        assert!(offers_h264_profile(&high.replace("packetization-mode=0;profile-level-id=64001f", "profile-level-id=64001F;packetization-mode=1"), "6400"));
        assert!(!offers_h264_profile("garbage", "42e0"));
    }

    pub const CHROME_LIKE_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=fingerprint:sha-256 00:11\r\na=setup:actpass\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    #[test]
    fn publish_answers() {
        // A Janus-like answer: recvonly H.264 on the mid we offered.
        let answer = "v=0\r\no=- 1 2 IN IP4 10.0.0.2\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 103\r\nc=IN IP4 10.0.0.2\r\na=mid:0\r\na=recvonly\r\na=rtpmap:103 H264/90000\r\na=fmtp:103 packetization-mode=1;profile-level-id=42001f\r\n";
        assert_eq!(check_publish_answer(answer), Ok(()));
        assert!(matches!(check_publish_answer("nonsense"), Err(AnswerError::Malformed(_))));
        assert_eq!(check_publish_answer(&answer.replace("m=video 9", "m=video 0")), Err(AnswerError::Rejected));
        assert_eq!(check_publish_answer(&answer.replace("H264/90000", "VP8/90000")), Err(AnswerError::NoH264("VP8".into())));
        assert_eq!(check_publish_answer(&answer.replace("a=recvonly", "a=inactive")), Err(AnswerError::NotReceiving("inactive".into())));
        assert_eq!(check_publish_answer(&answer.replace("m=video", "m=audio")), Err(AnswerError::NoVideo));
    }

    #[test]
    fn offers() {
        assert_eq!(check_offer(CHROME_LIKE_OFFER), Ok(ViewerCodec::H264), "H.264 wherever it is offered");
        assert!(matches!(check_offer("hello"), Err(OfferError::Malformed(_))));
        let vp8_only = CHROME_LIKE_OFFER
            .replace("a=rtpmap:102 H264/90000\r\n", "")
            .replace("a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n", "");
        assert_eq!(check_offer(&vp8_only), Ok(ViewerCodec::Vp8), "Firefox without OpenH264");
        assert_eq!(check_offer(&vp8_only.replace("VP8/", "VP9/")), Err(OfferError::NoH264OrVp8("VP9".into())));
        let mode0 = CHROME_LIKE_OFFER.replace("packetization-mode=1", "packetization-mode=0");
        assert_eq!(check_offer(&mode0), Ok(ViewerCodec::Vp8), "H.264 in mode 0 only: VP8");
        assert!(matches!(check_offer(&mode0.replace("VP8/", "AV1/")), Err(OfferError::NoH264OrVp8(_))));
        assert_eq!(check_offer(&vp8_only.replace("a=recvonly", "a=inactive")), Err(OfferError::NotReceiving("inactive".into())));
        let audio = CHROME_LIKE_OFFER.replace("m=video", "m=audio");
        assert_eq!(check_offer(&audio), Err(OfferError::NoVideo));
        let sendonly = CHROME_LIKE_OFFER.replace("a=recvonly", "a=sendonly");
        assert_eq!(check_offer(&sendonly), Err(OfferError::NotReceiving("sendonly".into())));
    }

    #[test]
    fn publisher_offers_send_h264() {
        let sendonly = CHROME_LIKE_OFFER.replace("a=recvonly", "a=sendonly");
        assert_eq!(check_publisher_offer(&sendonly), Ok(()));
        assert_eq!(check_publisher_offer(&sendonly.replace("a=sendonly", "a=sendrecv")), Ok(()));
        assert_eq!(check_publisher_offer(CHROME_LIKE_OFFER), Err(OfferError::NotSending("recvonly".into())));
        assert_eq!(check_publisher_offer(&sendonly.replace("H264/", "VP9/")), Err(OfferError::NoH264("VP8, VP9".into())));
        assert!(matches!(check_publisher_offer("v=0\r\n"), Err(OfferError::Malformed(_) | OfferError::NoVideo)));
    }

    #[test]
    fn fragments() {
        let f = parse_fragment("a=ice-ufrag:abcd\r\na=ice-pwd:xyz\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0\r\na=end-of-candidates\r\n").expect("valid");
        assert_eq!(f.ufrag.as_deref(), Some("abcd"));
        assert_eq!(f.mid.as_deref(), Some("0"));
        assert_eq!(f.candidates, vec!["candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0"]);
        assert!(f.end_of_candidates);
        assert_eq!(parse_fragment("a=candidate:1 1 udp x 1.2.3.4 5 typ host"), Err(FragmentError::BadCandidate(1)));
        assert_eq!(parse_fragment("hello world"), Err(FragmentError::NotSdp(1)));
        assert_eq!(parse_fragment("\r\n"), Err(FragmentError::Empty));
    }

    #[test]
    fn extra_hosts_join_the_answer_on_the_same_port() {
        let answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=candidate:1 1 udp 2130706431 127.0.0.1 8189 typ host\r\na=end-of-candidates\r\n";
        let out = add_host_candidates(answer, &["192.0.2.7".parse().expect("ip")]);
        assert!(out.contains("a=candidate:1 1 udp 2130706431 127.0.0.1 8189 typ host\r\na=candidate:extra0 1 udp"), "{out}");
        assert!(out.contains(" 192.0.2.7 8189 typ host\r\na=end-of-candidates"), "{out}");
    }
}
