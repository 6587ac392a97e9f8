//! What WHEP and WHIP responses carry in their headers, read the same way by the player and by
//! the relay when it is a WHIP or WHEP client itself: `Retry-After` and `Link` ICE servers.
//! Plain functions over strings.

/// `Retry-After` as milliseconds from `now_unix_ms`: delta-seconds or an HTTP-date (RFC 9110,
/// 10.2.3). `None` when absent or unreadable.
pub fn retry_after_ms(value: &str, now_unix_ms: u64) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    let when_ms = when.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64;
    Some(when_ms.saturating_sub(now_unix_ms))
}

/// An ICE server from a `Link: <...>; rel="ice-server"` header (WHEP section 4.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

/// The ICE servers in a response's `Link` header values. Other links are ignored.
///
/// Hand-written: a Link value is a list of `<uri>; param=value` items whose quoted values may
/// hold commas and semicolons; the crates we found either drop unknown parameters (we need
/// `username` and `credential`) or pull in a URL parser heavier than this whole module.
pub fn ice_servers<'a>(link_values: impl IntoIterator<Item = &'a str>) -> Vec<IceServer> {
    let mut out = Vec::new();
    for value in link_values {
        for link in split_links(value) {
            let Some((url, params)) = parse_link(&link) else { continue };
            let rel = params.iter().find(|(k, _)| k == "rel").map(|(_, v)| v.as_str()).unwrap_or("");
            if !rel.split_ascii_whitespace().any(|r| r.eq_ignore_ascii_case("ice-server")) {
                continue;
            }
            let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            out.push(IceServer { url, username: get("username"), credential: get("credential") });
        }
    }
    out
}

/// Splits a Link header value at the commas between links (not those inside `<>` or quotes).
fn split_links(value: &str) -> Vec<String> {
    let (mut out, mut cur) = (Vec::new(), String::new());
    let (mut in_uri, mut in_quote, mut escaped) = (false, false, false);
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quote => escaped = true,
            '"' if !in_uri => in_quote = !in_quote,
            '<' if !in_quote => in_uri = true,
            '>' if !in_quote => in_uri = false,
            ',' if !in_uri && !in_quote => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
}

/// `<uri>; a=b; c="d"` -> the URI and the parameters (names lower-cased, quotes removed).
fn parse_link(link: &str) -> Option<(String, Vec<(String, String)>)> {
    let rest = link.strip_prefix('<')?;
    let end = rest.find('>')?;
    let url = rest[..end].trim().to_owned();
    let mut params = Vec::new();
    let mut tail = &rest[end + 1..];
    while let Some(semi) = tail.find(';') {
        tail = tail[semi + 1..].trim_start();
        let eq = tail.find('=').unwrap_or(tail.len());
        let name = tail[..eq].trim().to_ascii_lowercase();
        tail = tail.get(eq + 1..).unwrap_or("").trim_start();
        let value = if let Some(q) = tail.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut consumed = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        consumed = i + 1;
                        break;
                    }
                    _ => v.push(c),
                }
            }
            tail = &q[consumed..];
            v
        } else {
            let stop = tail.find(';').unwrap_or(tail.len());
            let v = tail[..stop].trim().to_owned();
            tail = &tail[stop..];
            v
        };
        if !name.is_empty() {
            params.push((name, value));
        }
    }
    Some((url, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_as_seconds_or_a_date() {
        assert_eq!(retry_after_ms("3", 0), Some(3000));
        assert_eq!(retry_after_ms(" 120 ", 0), Some(120_000));
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777 s after the epoch.
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(retry_after_ms(date, 784_111_770_000), Some(7_000));
        assert_eq!(retry_after_ms(date, 784_111_790_000), Some(0), "a date in the past: retry now");
        assert_eq!(retry_after_ms("soon", 0), None);
        assert_eq!(retry_after_ms("-5", 0), None);
        assert_eq!(retry_after_ms("", 0), None);
        assert_eq!(retry_after_ms("99999999999999999999999", 0), None);
    }

    #[test]
    fn ice_servers_from_link_headers() {
        let v = r#"<stun:stun.example.net>; rel="ice-server", <turn:turn.example.net?transport=udp>; rel="ice-server"; username="user"; credential="p;a,ss"; credential-type="password""#;
        let got = ice_servers([v, r#"</telescope/whep/abc/sse>; rel="urn:ietf:params:whep:ext:core:server-sent-events"; events="active""#]);
        assert_eq!(
            got,
            vec![
                IceServer { url: "stun:stun.example.net".into(), username: None, credential: None },
                IceServer { url: "turn:turn.example.net?transport=udp".into(), username: Some("user".into()), credential: Some("p;a,ss".into()) },
            ]
        );
    }

    #[test]
    fn malformed_links_are_skipped_not_fatal() {
        assert!(ice_servers(["", "garbage", "<unterminated; rel=ice-server", ";;;", "<a>; rel"]).is_empty());
        let got = ice_servers(["<stun:a>; REL=ICE-SERVER; username=\"esc\\\"aped\""]);
        assert_eq!(got, vec![IceServer { url: "stun:a".into(), username: Some("esc\"aped".into()), credential: None }]);
    }
}
