//! Who may use the relay: an optional bearer token (the WHEP draft requires Bearer support),
//! and a per-client limit on how fast WHEP sessions are created.

use super::error::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Paths anyone may fetch: the player page and its files, and the health check. Everything else
/// (WHEP, API, events, metrics, MJPEG, snapshots) needs the token when one is set.
fn is_public(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["", ""] | ["", "healthz"] => true,
        ["", "static", ..] => true,
        // `/{stream}/`: the page for one stream.
        ["", _, ""] => true,
        _ => false,
    }
}

/// The token a request presents: `Authorization: Bearer ...`, or `?token=...` for what cannot
/// set headers (`<img>`, `EventSource`).
pub(crate) fn presented(req: &Request) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned());
    }
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
}

fn unauthorized(error: Option<&str>, detail: &str) -> Response {
    challenge(error, detail).into_response()
}

fn challenge(error: Option<&str>, detail: &str) -> ApiError {
    let challenge = match error {
        Some(e) => format!("Bearer realm=\"scopecast\", error=\"{e}\""),
        None => "Bearer realm=\"scopecast\"".to_owned(),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail)
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer")))
}

/// A 401 for a request whose token was wrong (`presented`) or missing.
pub(crate) fn refusal(presented: bool, missing: &str) -> ApiError {
    if presented {
        challenge(Some("invalid_token"), "the bearer token is not valid")
    } else {
        challenge(None, missing)
    }
}

/// `/{stream}/whip` and its sessions: publishers, whose token the WHIP handlers check.
fn is_whip(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    matches!(segments.as_slice(), ["", _, "whip"] | ["", _, "whip", _])
}

/// Whether a request may see what the token protects: there is no token, or it presents it.
pub fn authorized(state: &AppState, req: &Request) -> bool {
    match state.security.token.as_deref() {
        None => true,
        Some(expected) => presented(req).is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected.as_bytes()))),
    }
}

/// Middleware: checks the token where one is configured. CORS preflights carry no credentials
/// and pass.
pub async fn require_token(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(expected) = state.security.token.as_deref() else { return next.run(req).await };
    if req.method() == Method::OPTIONS || is_public(req.uri().path()) || is_whip(req.uri().path()) {
        return next.run(req).await;
    }
    match presented(&req) {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => next.run(req).await,
        Some(_) => unauthorized(Some("invalid_token"), "the bearer token is not valid"),
        None => unauthorized(None, "this relay needs a bearer token (Authorization: Bearer ..., or ?token=)"),
    }
}

/// Token buckets per client address: `rate` sessions a second, bursts of `burst`. Pure: time is
/// an argument. Memory is bounded: full, idle buckets are forgotten.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

/// Buckets kept before idle ones are swept.
const MAX_BUCKETS: usize = 4096;

impl RateLimiter {
    pub fn new(rate_per_s: f64, burst: f64) -> Self {
        Self { rate: rate_per_s, burst: burst.max(1.0), buckets: HashMap::new() }
    }

    /// Takes one token for `client`, or says how long until one is there.
    pub fn check(&mut self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, (tokens, at)| *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = self.buckets.entry(client).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }

    pub fn clients(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths() {
        for p in ["/", "/healthz", "/static/player.js", "/telescope/"] {
            assert!(is_public(p), "{p}");
        }
        for p in ["/telescope/whep", "/telescope/whep/abc", "/api/v1/streams", "/metrics", "/telescope/mjpeg", "/telescope/snapshot.jpg", "/telescope", "/a/b/"]
        {
            assert!(!is_public(p), "{p}");
        }
    }

    #[test]
    fn whip_paths_are_left_to_the_publisher_token() {
        for p in ["/scope/whip", "/scope/whip/abc"] {
            assert!(is_whip(p) && !is_public(p), "{p}");
        }
        for p in ["/scope/whep", "/whip", "/scope/whip/abc/sse", "/api/v1/streams/whip"] {
            assert!(!is_whip(p), "{p}");
        }
    }

    #[test]
    fn buckets_refill_at_the_rate_and_are_per_client() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().expect("ip"), "192.0.2.2".parse().expect("ip"));
        let mut r = RateLimiter::new(2.0, 3.0);
        assert!((0..3).all(|_| r.check(a, ms(0)).is_ok()), "a burst of 3");
        assert_eq!(r.check(a, ms(0)), Err(Duration::from_millis(500)), "then one per 500 ms");
        assert!(r.check(b, ms(0)).is_ok(), "another client has its own bucket");
        assert!(r.check(a, ms(250)).is_err());
        assert!(r.check(a, ms(500)).is_ok());
        assert!((0..3).all(|_| r.check(a, ms(10_000)).is_ok()) && r.check(a, ms(10_000)).is_err(), "refills to the burst, no more");
    }

    #[test]
    fn many_clients_do_not_grow_memory_without_bound() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(5.0, 10.0);
        for i in 0..20_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            let _ = r.check(ip, t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(r.clients() <= MAX_BUCKETS + 1, "{}", r.clients());
    }
}
