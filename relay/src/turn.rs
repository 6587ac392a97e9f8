//! TURN servers for viewers the relay cannot reach directly (symmetric NAT, networks that let
//! only TCP out): configured credentials, or short-lived ones minted per session from a shared
//! secret (the TURN REST scheme coturn implements as `use-auth-secret`). Pure: time is an
//! argument, and nothing here does I/O.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use std::time::Duration;

/// Lifetime of minted credentials unless configured: long enough for a night's session, which
/// keeps its TURN allocation alive with refreshes made under the same credentials.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// One configured TURN server (several URLs: UDP, TCP, TLS on 443...).
#[derive(Clone, PartialEq)]
pub struct TurnServer {
    pub urls: Vec<String>,
    pub auth: TurnAuth,
}

#[derive(Clone, PartialEq)]
pub enum TurnAuth {
    /// The same username and password for everyone.
    Static { username: String, credential: String },
    /// A secret shared with the TURN server; each session gets credentials valid for `ttl`.
    Secret { secret: String, ttl: Duration },
}

/// Never prints a credential or the secret.
impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            TurnAuth::Static { .. } => "static credentials".to_owned(),
            TurnAuth::Secret { ttl, .. } => format!("minted from a shared secret, {} s", ttl.as_secs()),
        };
        f.debug_struct("TurnServer").field("urls", &self.urls).field("auth", &auth).finish()
    }
}

/// What one session is given: an ICE server with the credentials to use it.
#[derive(Clone, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &self.credential.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Why a TURN URL is refused (configuration errors name the key).
pub fn check_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url.split_once(':').ok_or_else(|| format!("'{url}' is not a turn: or turns: URL"))?;
    if !matches!(scheme, "turn" | "turns") {
        return Err(format!("'{url}' is not a turn: or turns: URL"));
    }
    let (hostport, query) = rest.split_once('?').map_or((rest, None), |(h, q)| (h, Some(q)));
    if hostport.is_empty() || hostport.starts_with('/') || hostport.contains(['@', '/', ' ']) {
        return Err(format!("'{url}': expected turn:HOST[:PORT][?transport=udp|tcp]"));
    }
    match query {
        None | Some("transport=udp") | Some("transport=tcp") => Ok(()),
        Some(q) => Err(format!("'{url}': unknown '{q}' (only transport=udp or transport=tcp)")),
    }
}

/// The ICE servers for one new session at `now_unix` (seconds): STUN as configured, TURN with
/// its static credentials or freshly minted ones.
pub fn servers_for_session(stun: &[String], turn: &[TurnServer], now_unix: u64) -> Vec<IceServer> {
    let mut out = Vec::new();
    if !stun.is_empty() {
        out.push(IceServer { urls: stun.to_vec(), username: None, credential: None });
    }
    for server in turn {
        let (username, credential) = match &server.auth {
            TurnAuth::Static { username, credential } => (username.clone(), credential.clone()),
            TurnAuth::Secret { secret, ttl } => mint(secret, now_unix + ttl.as_secs(), "scopecast"),
        };
        out.push(IceServer { urls: server.urls.clone(), username: Some(username), credential: Some(credential) });
    }
    out
}

/// TURN REST credentials: the username is `EXPIRY:LABEL` (expiry in Unix seconds), the
/// password base64(HMAC-SHA1(secret, username)); the TURN server recomputes it from the secret
/// and refuses it once the expiry has passed.
pub fn mint(secret: &str, expires_unix: u64, label: &str) -> (String, String) {
    let username = format!("{expires_unix}:{label}");
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

/// `Link` header values for these servers (WHEP and WHIP, section 4.6): one per URL.
pub fn link_values(servers: &[IceServer]) -> Vec<String> {
    let mut out = Vec::new();
    for s in servers {
        for url in &s.urls {
            let mut v = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                v.push_str(&format!("; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"", quote(u), quote(c)));
            }
            out.push(v);
        }
    }
    out
}

/// The inside of an HTTP quoted-string.
fn quote(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_credentials_are_what_coturn_computes_from_the_secret() {
        // coturn's check: base64(HMAC-SHA1(static-auth-secret, username)); this vector was
        // computed with `printf %s 1700000000:scopecast | openssl dgst -sha1 -hmac north-star -binary | base64`.
        let (user, pass) = mint("north-star", 1_700_000_000, "scopecast");
        assert_eq!(user, "1700000000:scopecast");
        assert_eq!(pass, "PVqDZ5hJVHvOaBBb3fcR6UCM9Qw=");
        let (_, other) = mint("north-star", 1_700_000_001, "scopecast");
        assert_ne!(pass, other, "a new expiry is a new password");
    }

    #[test]
    fn each_session_gets_fresh_credentials_that_expire_after_the_ttl() {
        let turn = [TurnServer {
            urls: vec!["turn:t.example:3478?transport=udp".into()],
            auth: TurnAuth::Secret { secret: "s3cret".into(), ttl: Duration::from_secs(600) },
        }];
        let a = servers_for_session(&["stun:s.example".into()], &turn, 1000);
        let b = servers_for_session(&[], &turn, 1001);
        assert_eq!(a[0], IceServer { urls: vec!["stun:s.example".into()], username: None, credential: None });
        assert_eq!(a[1].username.as_deref(), Some("1600:scopecast"));
        assert_eq!(b[0].username.as_deref(), Some("1601:scopecast"));
        assert_ne!(a[1].credential, b[0].credential);
        let fixed = [TurnServer { urls: vec!["turn:t.example".into()], auth: TurnAuth::Static { username: "u".into(), credential: "p".into() } }];
        assert_eq!(servers_for_session(&[], &fixed, 5)[0].credential.as_deref(), Some("p"));
    }

    #[test]
    fn link_values_carry_credentials_quoted_and_debug_never_shows_them() {
        let s = IceServer {
            urls: vec!["turn:a:3478?transport=udp".into(), "turn:a:3478?transport=tcp".into()],
            username: Some("1:x".into()),
            credential: Some("p\"w\\d".into()),
        };
        let links = link_values(&[s.clone(), IceServer { urls: vec!["stun:b".into()], username: None, credential: None }]);
        assert_eq!(links[0], r#"<turn:a:3478?transport=udp>; rel="ice-server"; username="1:x"; credential="p\"w\\d"; credential-type="password""#);
        assert!(links[1].starts_with("<turn:a:3478?transport=tcp>"));
        assert_eq!(links[2], r#"<stun:b>; rel="ice-server""#);
        assert!(!format!("{s:?}").contains("p\\\"w"), "{s:?}");
        let t = TurnServer { urls: vec![], auth: TurnAuth::Secret { secret: "topsecret".into(), ttl: DEFAULT_TTL } };
        assert!(!format!("{t:?}").contains("topsecret"));
    }

    #[test]
    fn turn_urls_are_checked() {
        for ok in ["turn:t.example", "turn:10.0.0.1:3478?transport=udp", "turns:t.example:443?transport=tcp"] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in ["stun:t.example", "turn:", "turn:user@host", "turn://host", "turn:host?transport=sctp", "http://host"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
