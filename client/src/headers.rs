//! What the player reads from WHEP responses, and the URLs it derives from a stream's address.
//! Plain functions over strings, so they are tested natively. `Retry-After` and `Link` parsing
//! live in `scopecast_shared::headers`, which the relay's own WHIP and WHEP clients use too.

pub use scopecast_shared::headers::{ice_servers, retry_after_ms, IceServer};

/// Resolves a `Location` (absolute, root-relative or relative) against the URL it answered.
pub fn resolve(base: &str, location: &str) -> String {
    let location = location.trim();
    if location.contains("://") {
        return location.to_owned();
    }
    let origin_end = base.find("://").map(|i| i + 3).and_then(|s| base[s..].find('/').map(|j| s + j)).unwrap_or(base.len());
    if let Some(path) = location.strip_prefix('/') {
        if location.starts_with("//") {
            let scheme = base.split("://").next().unwrap_or("http");
            return format!("{scheme}:{location}");
        }
        return format!("{}/{path}", &base[..origin_end]);
    }
    let base_path = base[origin_end..].split(['?', '#']).next().unwrap_or("");
    let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    format!("{}{dir}{location}", &base[..origin_end])
}

/// The URLs of one stream on a Scopecast relay (or a MediaMTX-style WHEP server), from its
/// base address: `http://scope.local:8889/telescope`, with or without a trailing `/` or
/// `/whep`, or root-relative (`/telescope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamUrls {
    pub name: String,
    pub whep: String,
    pub mjpeg: String,
    pub snapshot: String,
    /// The H.264 rung's WebSocket, as an http(s) URL (see [`websocket_url`]).
    pub h264: String,
    /// The relay's status and event routes (absent on other WHEP servers: optional extras).
    pub info: String,
    pub events: String,
}

impl StreamUrls {
    /// A WHEP endpoint used exactly as given, on a server that is not Scopecast (Cloudflare
    /// Stream's `.../webRTC/play`, a MediaMTX or an SFU's WHEP URL): WHEP only, so the MJPEG,
    /// snapshot, status and event URLs are empty. Absolute http(s) or root-relative.
    pub fn for_whep(whep: &str) -> Option<Self> {
        let whep = whep.trim();
        let path_start = match whep.split_once("://") {
            Some((scheme, rest)) if matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.starts_with('/') => {
                whep.len() - rest.len() + rest.find('/').unwrap_or(rest.len())
            }
            Some(_) => return None,
            None if whep.starts_with('/') && !whep.starts_with("//") => 0,
            None => return None,
        };
        let path = whep[path_start..].split(['?', '#']).next().unwrap_or("");
        let name = path.split('/').rfind(|s| !s.is_empty() && !s.eq_ignore_ascii_case("whep")).unwrap_or("stream");
        let empty = String::new;
        Some(Self { name: name.to_owned(), whep: whep.to_owned(), mjpeg: empty(), snapshot: empty(), h264: empty(), info: empty(), events: empty() })
    }

    /// Whether the server is a Scopecast relay with its extras (MJPEG, status, events).
    pub fn has_extras(&self) -> bool {
        !self.info.is_empty()
    }

    pub fn from_src(src: &str) -> Option<Self> {
        let src = src.trim();
        let (src, query) = match src.find('?') {
            Some(i) => (&src[..i], &src[i..]),
            None => (src, ""),
        };
        let trimmed = src.trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/whep").unwrap_or(trimmed).trim_end_matches('/');
        let cut = trimmed.rfind('/')?;
        let (root, name) = (&trimmed[..cut], &trimmed[cut + 1..]);
        if name.is_empty() || name.contains(':') || root.ends_with([':', '/']) {
            return None;
        }
        let base = format!("{root}/{name}");
        Some(Self {
            name: name.to_owned(),
            whep: format!("{base}/whep{query}"),
            // Stretched as the stream's video is, so the picture looks the same on every rung.
            mjpeg: format!("{base}/mjpeg{query}{}stretch=1", if query.is_empty() { '?' } else { '&' }),
            snapshot: format!("{base}/snapshot.jpg{query}"),
            h264: format!("{base}/h264{query}"),
            info: format!("{root}/api/v1/streams/{name}{query}"),
            events: format!("{root}/api/v1/streams/{name}/events{query}"),
        })
    }
}

/// An absolute http(s) URL as the WebSocket URL of the same resource (ws, wss).
pub fn websocket_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let ws = match scheme.to_ascii_lowercase().as_str() {
        "http" => "ws",
        "https" => "wss",
        _ => return None,
    };
    Some(format!("{ws}://{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_like_a_browser() {
        let base = "http://scope.local:8889/telescope/whep";
        assert_eq!(resolve(base, "/telescope/whep/ab12"), "http://scope.local:8889/telescope/whep/ab12");
        assert_eq!(resolve(base, "whep/ab12"), "http://scope.local:8889/telescope/whep/ab12");
        assert_eq!(resolve(base, "https://other/x"), "https://other/x");
        assert_eq!(resolve(base, "//cdn.example/x"), "http://cdn.example/x");
        assert_eq!(resolve("http://h:1", "/x"), "http://h:1/x");
        assert_eq!(resolve("http://h:1/a/b?q=/c", "d"), "http://h:1/a/d");
    }

    #[test]
    fn a_foreign_whep_url_is_used_as_it_is() {
        let cf = "https://customer-abc.cloudflarestream.com/0123secret/webRTC/play";
        let u = StreamUrls::for_whep(cf).expect("absolute");
        assert_eq!((u.whep.as_str(), u.name.as_str(), u.has_extras()), (cf, "play", false));
        assert!(u.mjpeg.is_empty() && u.events.is_empty() && u.info.is_empty());
        let m = StreamUrls::for_whep("http://mediamtx.local:8889/scope/whep?token=x").expect("with query");
        assert_eq!((m.name.as_str(), m.whep.as_str()), ("scope", "http://mediamtx.local:8889/scope/whep?token=x"));
        assert_eq!(StreamUrls::for_whep("/edge/whep").map(|u| u.name), Some("edge".into()));
        for bad in ["", "ftp://x/whep", "scope/whep", "//host/whep", "http:///whep"] {
            assert_eq!(StreamUrls::for_whep(bad), None, "{bad:?}");
        }
        assert!(StreamUrls::from_src("http://scope.local:8889/telescope").expect("ours").has_extras());
    }

    #[test]
    fn websocket_urls_keep_the_security_of_the_page() {
        assert_eq!(websocket_url("http://h:8889/telescope/h264?token=t").as_deref(), Some("ws://h:8889/telescope/h264?token=t"));
        assert_eq!(websocket_url("HTTPS://scope.example/telescope/h264").as_deref(), Some("wss://scope.example/telescope/h264"));
        assert_eq!(websocket_url("/telescope/h264"), None, "relative: resolve it first");
        assert_eq!(websocket_url("ftp://h/x"), None);
    }

    #[test]
    fn stream_urls_from_any_form_of_the_address() {
        let want = StreamUrls {
            name: "telescope".into(),
            whep: "http://h:8889/telescope/whep".into(),
            mjpeg: "http://h:8889/telescope/mjpeg?stretch=1".into(),
            snapshot: "http://h:8889/telescope/snapshot.jpg".into(),
            h264: "http://h:8889/telescope/h264".into(),
            info: "http://h:8889/api/v1/streams/telescope".into(),
            events: "http://h:8889/api/v1/streams/telescope/events".into(),
        };
        for src in ["http://h:8889/telescope", "http://h:8889/telescope/", "http://h:8889/telescope/whep", " http://h:8889/telescope/whep/ "] {
            assert_eq!(StreamUrls::from_src(src).as_ref(), Some(&want), "{src}");
        }
        let rel = StreamUrls::from_src("/deep?token=t").expect("root-relative");
        assert_eq!((rel.whep.as_str(), rel.events.as_str()), ("/deep/whep?token=t", "/api/v1/streams/deep/events?token=t"));
        assert_eq!(rel.mjpeg, "/deep/mjpeg?token=t&stretch=1");
        assert_eq!(StreamUrls::from_src("http://h:8889/"), None, "no stream name");
        assert_eq!(StreamUrls::from_src("nothing"), None);
        assert_eq!(StreamUrls::from_src("http://host/"), None, "a host is not a stream");
    }
}
