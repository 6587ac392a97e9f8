//! The WHEP contract's error cases, each bad request with its status and RFC 9457 body, plus
//! the discovery and CORS answers players rely on.

use scopecast::config::{SecurityConfig, StreamConfig};
use scopecast_shared::Problem;
use scopecast_tests::viewer::make_offer;
use scopecast_tests::{base_url, start_relay, start_relay_with};

struct Case {
    name: &'static str,
    method: reqwest::Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    status: u16,
    /// Problem slug expected in the body; `None` for success answers.
    problem: Option<&'static str>,
}

fn case(
    name: &'static str,
    method: reqwest::Method,
    path: &str,
    content_type: Option<&'static str>,
    body: impl Into<Vec<u8>>,
    status: u16,
    problem: Option<&'static str>,
) -> Case {
    Case { name, method, path: path.to_owned(), content_type, body: body.into(), headers: vec![], status, problem }
}

async fn run(client: &reqwest::Client, base: &str, c: &Case) -> reqwest::Response {
    let mut req = client.request(c.method.clone(), format!("{base}{}", c.path)).body(c.body.clone());
    if let Some(t) = c.content_type {
        req = req.header("content-type", t);
    }
    for (k, v) in &c.headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.unwrap_or_else(|e| panic!("{}: {e}", c.name));
    assert_eq!(res.status().as_u16(), c.status, "{}", c.name);
    res
}

async fn check(client: &reqwest::Client, base: &str, c: &Case) {
    let res = run(client, base, c).await;
    if !c.body.is_empty() && c.status >= 400 {
        // The body may be unread: the connection must not be reused for another request.
        assert_eq!(res.headers().get("connection").and_then(|v| v.to_str().ok()), Some("close"), "{}", c.name);
    }
    if let Some(slug) = c.problem {
        assert_eq!(res.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"), "{}", c.name);
        let p: Problem = res.json().await.unwrap_or_else(|e| panic!("{}: body is not a problem: {e}", c.name));
        assert_eq!((p.slug(), p.status), (slug, c.status), "{}", c.name);
        assert!(p.detail.as_deref().is_some_and(|d| !d.is_empty()), "{}: says what was wrong", c.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_problem_body() {
    use reqwest::Method as M;
    // Many bad offers in a row from one client: the per-client limit is not what is tested here.
    let generous = SecurityConfig { session_rate: 1000.0, ..SecurityConfig::default() };
    let relay = start_relay_with(vec![StreamConfig::test_pattern("telescope", 320, 240, 5.0)], generous).await;
    let base = base_url(&relay);
    let client = reqwest::Client::new();
    let (_pc, offer) = make_offer().await.expect("offer");
    let vp8_only = {
        let mut lines: Vec<&str> = offer.split("\r\n").collect();
        let h264_pts: Vec<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("a=rtpmap:"))
            .filter(|l| l.contains("H264/"))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect();
        lines.retain(|l| !h264_pts.iter().any(|pt| l.starts_with(&format!("a=rtpmap:{pt} ")) || l.starts_with(&format!("a=fmtp:{pt} "))));
        lines.join("\r\n")
    };
    assert!(!vp8_only.contains("H264"), "the test offer still has H.264");
    let sdp = Some("application/sdp");
    let cases = [
        case("unknown stream", M::POST, "/nebula/whep", sdp, offer.clone(), 404, Some("unknown-stream")),
        case("text/plain offer", M::POST, "/telescope/whep", Some("text/plain"), offer.clone(), 415, Some("unsupported-media-type")),
        case("no content type", M::POST, "/telescope/whep", None, offer.clone(), 415, Some("unsupported-media-type")),
        case("JSON offer", M::POST, "/telescope/whep", Some("application/json"), "{\"sdp\":\"v=0\"}", 415, Some("unsupported-media-type")),
        case("body over 64 KiB", M::POST, "/telescope/whep", sdp, vec![b'a'; 70 * 1024], 413, Some("body-too-large")),
        case("garbage SDP", M::POST, "/telescope/whep", sdp, "this is not SDP", 400, Some("malformed-sdp")),
        case("empty SDP", M::POST, "/telescope/whep", sdp, "", 400, Some("malformed-sdp")),
        case("binary body", M::POST, "/telescope/whep", sdp, vec![0xff, 0xfe, 0x00, 0x80], 400, Some("malformed-body")),
        case("neither H.264 nor VP8 offered", M::POST, "/telescope/whep", sdp, vp8_only.replace("VP8/", "AV1/"), 422, Some("unsupported-offer")),
        case("audio only", M::POST, "/telescope/whep", sdp, offer.replace("m=video", "m=audio"), 422, Some("unsupported-offer")),
        case("sendonly video", M::POST, "/telescope/whep", sdp, offer.replace("a=recvonly", "a=sendonly"), 422, Some("unsupported-offer")),
        case("DELETE unknown session", M::DELETE, "/telescope/whep/0123456789abcdef", None, "", 404, Some("unknown-session")),
        case(
            "PATCH unknown session",
            M::PATCH,
            "/telescope/whep/0123456789abcdef",
            Some("application/trickle-ice-sdpfrag"),
            "a=end-of-candidates",
            404,
            Some("unknown-session"),
        ),
        case("GET unknown endpoint", M::GET, "/nebula/whep", None, "", 404, Some("unknown-stream")),
        case("unknown page", M::GET, "/no/such/thing/here", None, "", 404, Some("not-found")),
        case("GET endpoint", M::GET, "/telescope/whep", None, "", 204, None),
        case("HEAD endpoint", M::HEAD, "/telescope/whep", None, "", 204, None),
    ];
    for c in &cases {
        check(&client, &base, c).await;
    }
    assert_eq!(relay.session_count(), 0, "no failed request left a session behind");

    // A real session for the session-URL cases.
    let res = client.post(format!("{base}/telescope/whep")).header("content-type", "application/sdp").body(offer.clone()).send().await.expect("POST");
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().expect("location").to_owned();
    let etag = res.headers()["etag"].to_str().expect("etag").to_owned();
    assert!(location.starts_with("/telescope/whep/") && location.len() >= "/telescope/whep/".len() + 32, "unguessable: {location}");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "strong ETag: {etag}");
    let answer = res.text().await.expect("answer");
    assert!(answer.contains("a=sendonly") && answer.contains("a=candidate:") && answer.contains("H264"), "{answer}");
    assert!(answer.contains("profile-level-id=42e01f"), "{answer}");
    // The relay's UDP socket is bound to 127.0.0.1: no other address may be offered to peers.
    let candidates: Vec<&str> = answer.lines().filter(|l| l.starts_with("a=candidate:")).collect();
    assert!(candidates.iter().all(|c| c.contains(" 127.0.0.1 ")), "only the bound address: {candidates:?}");

    let trickle = Some("application/trickle-ice-sdpfrag");
    let ufrag = offer.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).expect("ufrag").trim().to_owned();
    let good_frag = format!("a=ice-ufrag:{ufrag}\r\na=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n");
    let mut stale = case("PATCH with a stale If-Match", M::PATCH, &location, trickle, good_frag.clone(), 412, Some("etag-mismatch"));
    stale.headers.push(("if-match", "\"nope\"".into()));
    let mut matching = case("PATCH trickle with If-Match", M::PATCH, &location, trickle, good_frag.clone(), 204, None);
    matching.headers.push(("if-match", etag.clone()));
    let session_cases = [
        case("PATCH as SDP", M::PATCH, &location, sdp, good_frag.clone(), 415, Some("unsupported-media-type")),
        case("PATCH garbage fragment", M::PATCH, &location, trickle, "hello there", 400, Some("malformed-fragment")),
        case("PATCH broken candidate", M::PATCH, &location, trickle, "a=candidate:1 1 udp notanumber 1.2.3.4 5 typ host", 400, Some("malformed-fragment")),
        case(
            "PATCH ICE restart without If-Match",
            M::PATCH,
            &location,
            trickle,
            "a=ice-ufrag:newufrag\r\na=ice-pwd:newpasswordnewpassword12\r\n",
            428,
            Some("if-match-required"),
        ),
        case(
            "PATCH session of another stream",
            M::PATCH,
            &location.replace("/telescope/", "/nebula/"),
            trickle,
            good_frag.clone(),
            404,
            Some("unknown-stream"),
        ),
        stale,
        matching,
        case("PATCH trickle", M::PATCH, &location, trickle, good_frag, 204, None),
        case("GET session", M::GET, &location, None, "", 204, None),
        case("DELETE session", M::DELETE, &location, None, "", 200, None),
        case("DELETE it again", M::DELETE, &location, None, "", 404, Some("unknown-session")),
    ];
    for c in &session_cases {
        check(&client, &base, c).await;
    }
    assert_eq!(relay.session_count(), 0);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_cors_let_a_page_on_another_origin_play_and_hang_up() {
    let relay = start_relay(vec![StreamConfig::test_pattern("telescope", 320, 240, 5.0)]).await;
    let base = base_url(&relay);
    let client = reqwest::Client::new();
    // Plain OPTIONS: WHEP discovery.
    let res = client.request(reqwest::Method::OPTIONS, format!("{base}/telescope/whep")).send().await.expect("OPTIONS");
    assert!(res.status().is_success());
    assert_eq!(res.headers()["accept-post"], "application/sdp");
    // A browser's preflight.
    let res = client
        .request(reqwest::Method::OPTIONS, format!("{base}/telescope/whep"))
        .header("origin", "http://telescope-ui.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("preflight");
    assert!(res.status().is_success());
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert_eq!(res.headers()["accept-post"], "application/sdp");
    let methods = res.headers()["access-control-allow-methods"].to_str().expect("methods").to_ascii_uppercase();
    assert!(methods.contains("POST") && methods.contains("DELETE") && methods.contains("PATCH"), "{methods}");
    // The 201 exposes what a cross-origin script must read.
    let (_pc, offer) = make_offer().await.expect("offer");
    let res = client
        .post(format!("{base}/telescope/whep"))
        .header("origin", "http://telescope-ui.example")
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), 201);
    let exposed = res.headers()["access-control-expose-headers"].to_str().expect("expose").to_ascii_lowercase();
    for h in ["location", "etag", "link"] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed}");
    }
    let location = res.headers()["location"].to_str().expect("location").to_owned();
    assert_eq!(client.delete(format!("{base}{location}")).send().await.expect("DELETE").status(), 200);
    // The API lists the stream for players.
    let list: scopecast_shared::StreamList = client.get(format!("{base}/api/v1/streams")).send().await.expect("GET").json().await.expect("JSON");
    assert_eq!(list.streams.len(), 1);
    assert_eq!((list.streams[0].name.as_str(), list.streams[0].width, list.streams[0].whep_url.as_str()), ("telescope", Some(320), "/telescope/whep"));
    relay.shutdown().await;
}
