//! `application/trickle-ice-sdpfrag` bodies (RFC 8840) for WHEP's PATCH: trickled candidates
//! and ICE restarts. Line-level work on SDP text, so it is tested natively.

/// The ICE credentials and first media section of an SDP (a player offers one video section).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IceParams {
    pub ufrag: String,
    pub pwd: String,
    pub mid: String,
}

impl IceParams {
    pub fn from_sdp(sdp: &str) -> Option<Self> {
        let attr = |name: &str| sdp.lines().find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()));
        Some(Self { ufrag: attr("a=ice-ufrag:")?, pwd: attr("a=ice-pwd:")?, mid: attr("a=mid:").unwrap_or_else(|| "0".into()) })
    }
}

/// A fragment carrying `candidates` (each `candidate:...`, as `RTCIceCandidate.candidate`
/// gives them; empty for an ICE restart that has none yet) for the session with `ice`.
pub fn fragment(ice: &IceParams, candidates: &[String]) -> String {
    let mut out = format!("a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{}\r\n", ice.ufrag, ice.pwd, ice.mid);
    for c in candidates {
        let c = c.trim();
        let c = c.strip_prefix("a=").unwrap_or(c);
        if c.starts_with("candidate:") {
            out.push_str("a=");
            out.push_str(c);
            out.push_str("\r\n");
        }
    }
    out
}

/// Applies a restart answer fragment to the previous remote SDP: new credentials, its
/// candidates instead of the old ones. `None` when the fragment has no credentials.
pub fn apply_restart(remote_sdp: &str, answer_fragment: &str) -> Option<String> {
    let ice = IceParams::from_sdp(answer_fragment)?;
    let candidates: Vec<&str> = answer_fragment.lines().map(str::trim).filter(|l| l.starts_with("a=candidate:")).collect();
    let mut out = String::new();
    for line in remote_sdp.lines().map(str::trim_end) {
        if line.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{}\r\n", ice.ufrag));
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{}\r\n", ice.pwd));
        } else if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        } else {
            out.push_str(line);
            out.push_str("\r\n");
            if line.starts_with("a=mid:") {
                for c in &candidates {
                    out.push_str(c);
                    out.push_str("\r\n");
                }
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\na=mid:0\r\na=recvonly\r\n";

    #[test]
    fn credentials_and_mid_from_an_offer() {
        assert_eq!(IceParams::from_sdp(OFFER), Some(IceParams { ufrag: "abcd".into(), pwd: "0123456789abcdef012345".into(), mid: "0".into() }));
        assert_eq!(IceParams::from_sdp("v=0\r\n"), None);
    }

    #[test]
    fn a_trickle_fragment_carries_the_candidates() {
        let ice = IceParams::from_sdp(OFFER).expect("params");
        let frag = fragment(
            &ice,
            &["candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host".into(), "a=candidate:2 1 udp 1 10.0.0.1 1 typ host".into(), "".into(), "junk".into()],
        );
        assert_eq!(
            frag,
            "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host\r\na=candidate:2 1 udp 1 10.0.0.1 1 typ host\r\n"
        );
    }

    #[test]
    fn a_restart_answer_replaces_credentials_and_candidates() {
        let remote = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 8189 typ host\r\na=end-of-candidates\r\na=sendonly\r\n";
        let answer = "a=ice-ufrag:new\r\na=ice-pwd:newpwd\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:9 1 udp 1 127.0.0.1 8189 typ host\r\n";
        let got = apply_restart(remote, answer).expect("applied");
        assert_eq!(got, "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:new\r\na=ice-pwd:newpwd\r\na=mid:0\r\na=candidate:9 1 udp 1 127.0.0.1 8189 typ host\r\na=sendonly\r\n");
        assert_eq!(apply_restart(remote, "garbage"), None);
    }
}
