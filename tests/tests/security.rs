//! The relay's doors: the bearer token on everything but the page, the CORS allow-list, and the
//! limits on how fast and how many WHEP sessions are made.

use scopecast::config::{SecurityConfig, StreamConfig};
use scopecast::turn::{TurnAuth, TurnServer};
use scopecast_shared::Problem;
use scopecast_tests::viewer::make_offer;
use scopecast_tests::{base_url, start_relay_with};
use std::time::Duration;

const TOKEN: &str = "clear-skies-42";

fn pattern() -> Vec<StreamConfig> {
    vec![StreamConfig::test_pattern("telescope", 320, 240, 10.0)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_everything_but_the_page_needs_it() {
    let relay = start_relay_with(pattern(), SecurityConfig { token: Some(TOKEN.into()), ..SecurityConfig::default() }).await;
    let base = base_url(&relay);
    let client = reqwest::Client::new();
    for open in ["/", "/telescope/", "/static/scopecast-player.js", "/static/player/scopecast_client_bg.wasm", "/static/embed.html", "/healthz"] {
        assert_eq!(client.get(format!("{base}{open}")).send().await.expect("GET").status(), 200, "{open} is public");
    }
    for closed in [
        "/api/v1/streams",
        "/api/v1/streams/telescope",
        "/api/v1/streams/telescope/events",
        "/metrics",
        "/telescope/snapshot.jpg",
        "/telescope/mjpeg",
        "/telescope/whep",
    ] {
        let res = client.get(format!("{base}{closed}")).send().await.expect("GET");
        assert_eq!(res.status(), 401, "{closed}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"scopecast\"", "{closed}");
        assert_eq!(res.json::<Problem>().await.expect("problem").slug(), "unauthorized");
    }
    let wrong = client.get(format!("{base}/api/v1/streams")).bearer_auth("cloudy-skies-00").send().await.expect("GET");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers()["www-authenticate"].to_str().expect("challenge").contains("error=\"invalid_token\""));
    assert_eq!(client.get(format!("{base}/api/v1/streams")).bearer_auth(TOKEN).send().await.expect("GET").status(), 200);
    // For <img> and EventSource, which cannot send headers.
    let snapshot = client.get(format!("{base}/telescope/snapshot.jpg?token={TOKEN}")).send().await.expect("GET");
    assert_eq!(snapshot.status(), 200);
    assert_eq!(snapshot.headers()["content-type"], "image/jpeg");

    // WHEP: the offer, and the session URL, both need it.
    let (_pc, offer) = make_offer().await.expect("offer");
    let post = |token: Option<&str>| {
        let mut req = client.post(format!("{base}/telescope/whep")).header("content-type", "application/sdp").body(offer.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(post(None).await.expect("POST").status(), 401);
    assert_eq!(relay.session_count(), 0, "no session for a refused offer");
    let res = post(Some(TOKEN)).await.expect("POST");
    assert_eq!(res.status(), 201);
    let session = format!("{base}{}", res.headers()["location"].to_str().expect("location"));
    assert_eq!(client.delete(&session).send().await.expect("DELETE").status(), 401);
    assert_eq!(relay.session_count(), 1, "an unauthenticated DELETE ends nothing");
    assert_eq!(client.delete(&session).bearer_auth(TOKEN).send().await.expect("DELETE").status(), 200);

    // A page on another origin: its preflight passes without credentials, and it can read a
    // 401 (CORS headers on the refusal too).
    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{base}/telescope/whep"))
        .header("origin", "http://telescope-ui.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    assert!(preflight.headers()["access-control-allow-headers"].to_str().expect("headers").contains("authorization"));
    let refused = client.get(format!("{base}/api/v1/streams")).header("origin", "http://telescope-ui.example").send().await.expect("GET");
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["access-control-allow-origin"], "*");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_go_only_to_callers_with_the_token_and_are_readable_cross_origin() {
    let mut config = scopecast_tests::test_config(pattern());
    config.security.token = Some(TOKEN.into());
    config.ice.turn = vec![TurnServer {
        // Nothing listens there: nothing leaves the machine, and the relay gathers no relay candidate.
        urls: vec!["turn:127.0.0.1:9?transport=udp".into(), "turn:127.0.0.1:9?transport=tcp".into()],
        auth: TurnAuth::Secret { secret: "shared-with-coturn".into(), ttl: Duration::from_secs(3600) },
    }];
    let relay = scopecast_tests::start_relay_config(config).await;
    let base = base_url(&relay);
    let client = reqwest::Client::new();
    let options = |token: Option<&'static str>| {
        let mut req = client.request(reqwest::Method::OPTIONS, format!("{base}/telescope/whep")).header("origin", "http://telescope-ui.example");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let links = |res: &reqwest::Response| res.headers().get_all("link").iter().map(|v| v.to_str().expect("link").to_owned()).collect::<Vec<_>>();
    let anonymous = options(None).await.expect("OPTIONS");
    assert!(anonymous.status().is_success());
    assert!(links(&anonymous).is_empty(), "no credentials without the token: {:?}", links(&anonymous));
    assert!(links(&options(Some("cloudy-skies-00")).await.expect("OPTIONS")).is_empty(), "nor with a wrong one");

    let with_token = options(Some(TOKEN)).await.expect("OPTIONS");
    let first = links(&with_token);
    assert_eq!(first.len(), 2, "one Link per URL: {first:?}");
    assert!(first.iter().all(|l| l.contains("rel=\"ice-server\"") && l.contains("username=\"") && l.contains("credential-type=\"password\"")), "{first:?}");
    assert!(with_token.headers()["access-control-expose-headers"].to_str().expect("expose").contains("link"), "a page on another origin can read them");
    assert_eq!(with_token.headers()["accept-post"], "application/sdp");
    // A preflight carries no token and gets none.
    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{base}/telescope/whep"))
        .header("origin", "http://telescope-ui.example")
        .header("access-control-request-method", "OPTIONS")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .expect("preflight");
    assert!(links(&preflight).is_empty());

    // The WHEP answer carries a session's own set too, and never the secret.
    let (_pc, offer) = make_offer().await.expect("offer");
    let res =
        client.post(format!("{base}/telescope/whep")).bearer_auth(TOKEN).header("content-type", "application/sdp").body(offer).send().await.expect("POST");
    assert_eq!(res.status(), 201);
    let answer_links: Vec<_> = links(&res).into_iter().filter(|l| l.contains("ice-server")).collect();
    assert_eq!(answer_links.len(), 2, "{answer_links:?}");
    assert!(!answer_links.iter().chain(&first).any(|l| l.contains("shared-with-coturn")));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_origins_get_cors_headers() {
    let security = SecurityConfig { cors_origins: vec!["http://telescope-ui.example".into()], ..SecurityConfig::default() };
    let relay = start_relay_with(pattern(), security).await;
    let base = base_url(&relay);
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{base}/telescope/whep"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("http://telescope-ui.example").await.expect("preflight");
    assert_eq!(allowed.headers()["access-control-allow-origin"], "http://telescope-ui.example");
    let other = preflight("http://elsewhere.example").await.expect("preflight");
    assert!(!other.headers().contains_key("access-control-allow-origin"), "a browser will refuse the call from elsewhere");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_creation_is_limited_per_client_and_in_total() {
    // One session a second per client (bursts of two), and one session at a time.
    let security = SecurityConfig { session_rate: 1.0, max_sessions: 1, ..SecurityConfig::default() };
    let relay = start_relay_with(pattern(), security).await;
    let base = base_url(&relay);
    let client = reqwest::Client::new();
    let (_pc, offer) = make_offer().await.expect("offer");
    let post = |body: String| client.post(format!("{base}/telescope/whep")).header("content-type", "application/sdp").body(body).send();

    let first = post(offer.clone()).await.expect("POST");
    assert_eq!(first.status(), 201);
    let session = format!("{base}{}", first.headers()["location"].to_str().expect("location"));
    let full = post(offer.clone()).await.expect("POST");
    assert_eq!(full.status(), 503, "the relay is full");
    assert!(full.headers().contains_key("retry-after"));
    assert_eq!(full.json::<Problem>().await.expect("problem").slug(), "too-many-sessions");
    let fast = post("not even SDP".into()).await.expect("POST");
    assert_eq!(fast.status(), 429, "a third offer within a second");
    assert!(fast.headers()["retry-after"].to_str().expect("seconds").parse::<u64>().is_ok_and(|s| s >= 1));
    assert_eq!(fast.json::<Problem>().await.expect("problem").slug(), "too-many-requests");

    assert_eq!(client.delete(&session).send().await.expect("DELETE").status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(post(offer).await.expect("POST").status(), 201, "room again, and time for a new token");
    relay.shutdown().await;
}
