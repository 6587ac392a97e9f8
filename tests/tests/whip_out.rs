//! WHIP out (RFC 9725): the relay hands a stream to an SFU. Against Janus (a real SFU, in a
//! network namespace, whose recording must hold the stream's frames at the stream's size), and
//! against a sink of our own for what Janus cannot do on cue: redirects, relative Locations, a
//! target that drops the session or refuses, DELETE on shutdown.

use scopecast::config::{PublishTarget, StreamConfig};
use scopecast_shared::api::{PublishInfo, PublishState, StreamInfo};
use scopecast_tests::janus::JanusLab;
use scopecast_tests::whip_sink::{WhipSink, SINK_TOKEN};
use scopecast_tests::{eventually_async, one_at_a_time, start_relay_config, test_config};
use std::time::{Duration, Instant};

async fn publish_info(base: &str, stream: &str) -> Vec<PublishInfo> {
    let info: StreamInfo = reqwest::get(format!("{base}/api/v1/streams/{stream}")).await.expect("status").json().await.expect("json");
    info.publish
}

fn target(name: &str, url: &str, token: &str) -> PublishTarget {
    PublishTarget { name: name.into(), url: url.parse().expect("url"), token: Some(token.into()) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_published_to_janus_is_recorded_with_its_frames_and_size() {
    let _serial = one_at_a_time().await;
    let lab = JanusLab::start().expect("Janus lab (needs root, janus and scripts/setup-whip-server.sh)");
    let url = lab.create_endpoint("scope", "janus-token-1").await.expect("endpoint");
    let mut stream = StreamConfig::test_pattern("telescope", 640, 360, 25.0);
    stream.publish = vec![target("janus", &url, "janus-token-1")];
    let mut config = test_config(vec![stream]);
    // Janus is reached over the veth pair: gather on every interface, not only loopback.
    config.ice.udp = "0.0.0.0:0".parse().expect("address");
    let relay = start_relay_config(config).await;
    let base = relay.base_url();

    let started = Instant::now();
    eventually_async(20, "the publish target live", || async { publish_info(&base, "telescope").await[0].state == PublishState::Live }).await;
    let connect_time = started.elapsed();
    assert!(lab.endpoint_busy("scope").await.expect("endpoints"), "Janus has our publisher");
    // Janus asks for a keyframe every 2 s (fir_freq): each becomes a throttled IDR request.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let info = publish_info(&base, "telescope").await.remove(0);
    assert_eq!(info.endpoint, format!("http://{}:7080", scopecast_tests::janus::JANUS_IP), "only the origin is shown");
    assert!(info.frames_sent >= 100, "5 s at 25 fps sent: {info:?}");
    assert!(info.keyframe_requests >= 1, "Janus's PLI/FIR arrived: {info:?}");
    assert_eq!((info.attempts, info.connects), (1, 1), "{info:?}");
    let metrics = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains(r#"scopecast_publish_up{stream="telescope",target="janus"} 1"#), "{metrics}");
    assert!(!metrics.contains("janus-token-1"), "the token is in no metric");

    relay.shutdown().await;
    // The shutdown DELETEd the session: the endpoint is free for the next publisher.
    assert!(!lab.endpoint_busy("scope").await.expect("endpoints"), "DELETE on shutdown freed the endpoint\n{}", lab.logs());
    let recordings = lab.recordings();
    assert_eq!(recordings.len(), 1, "one publish session, one recording\n{}", lab.logs());
    // Janus closes its recording when the session ends: give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rec = lab.probe(&recordings[0]).expect("the recording converts and probes");
    assert_eq!((rec.width, rec.height), (640, 360), "{rec:?}");
    let seconds = started.elapsed().saturating_sub(connect_time).as_secs_f64();
    assert!(rec.frames as f64 >= 20.0 * 5.0, "Janus recorded {} frames over {seconds:.1} s of publishing", rec.frames);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishing_follows_redirects_survives_a_dropped_session_and_deletes_on_shutdown() {
    let _serial = one_at_a_time().await;
    let sink = WhipSink::start().await.expect("sink");
    let mut stream = StreamConfig::test_pattern("telescope", 320, 240, 25.0);
    stream.publish = vec![target("sink", &sink.entry_url, SINK_TOKEN), target("wrong-token", &sink.entry_url, "not-the-token")];
    let relay = start_relay_config(test_config(vec![stream])).await;
    let base = relay.base_url();

    // The entry answered 307; the offer reached the endpoint proper, and frames decode there.
    let frames = sink.frames_of(0, 10, Duration::from_secs(10)).await;
    assert_eq!(frames.len(), 10, "the sink decoded frames of the first session");
    assert_eq!((frames[0].width, frames[0].height), (320, 240));
    let offer = sink.offer(0);
    assert!(offer.contains("a=sendonly"), "a sendonly offer");
    assert!(offer.contains("profile-level-id=42e01f") && offer.contains("profile-level-id=42001f"), "both H.264 profiles offered:\n{offer}");
    assert!(!offer.contains("m=audio"), "video only");
    assert!(offer.contains("a=candidate"), "a full offer: candidates included, nothing left to trickle");

    let info = publish_info(&base, "telescope").await;
    assert_eq!(info[0].state, PublishState::Live);
    // The wrong token is refused, said in the API, and retried.
    eventually_async(10, "the refused target to retry", || async {
        let t = &publish_info(&base, "telescope").await[1];
        t.state == PublishState::Retrying && t.attempts >= 2
    })
    .await;
    let refused = &publish_info(&base, "telescope").await[1];
    assert_eq!(refused.last_error.as_deref(), Some("the target answered 401: bad token"), "{refused:?}");

    // The SFU drops the session: the relay publishes again, with a new POST, and frames flow.
    let dropped = Instant::now();
    sink.drop_session(0).await;
    let frames = sink.frames_of(1, 5, Duration::from_secs(20)).await;
    assert_eq!(frames.len(), 5, "frames again in a second session");
    let back = dropped.elapsed();
    assert!(back < Duration::from_secs(15), "publishing again took {back:?}");
    let info = publish_info(&base, "telescope").await.remove(0);
    assert!(info.connects >= 2 && info.last_error.is_some(), "{info:?}");

    // A target refusing for a while (503 + Retry-After): backoff, then back once it accepts.
    sink.refuse(Some(503));
    sink.drop_session(1).await;
    eventually_async(15, "a refused attempt", || async { publish_info(&base, "telescope").await[0].last_error.as_deref().is_some_and(|e| e.contains("503")) })
        .await;
    sink.refuse(None);
    eventually_async(40, "publishing after the refusals", || async { publish_info(&base, "telescope").await[0].state == PublishState::Live }).await;
    let (count, _) = sink.sessions();
    assert!(sink.frames_of(count - 1, 5, Duration::from_secs(10)).await.len() == 5, "frames in the session after the refusals");

    relay.shutdown().await;
    let (count, deleted) = sink.sessions();
    assert!(deleted[count - 1], "the live session was DELETEd on shutdown: {deleted:?}");
    assert!(sink.posts() >= 4, "POSTs: {}", sink.posts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_targets_change_at_runtime_through_the_api() {
    let _serial = one_at_a_time().await;
    let sink = WhipSink::start().await.expect("sink");
    let token = "relay-admin-token";
    let mut config = test_config(vec![StreamConfig::test_pattern("telescope", 320, 240, 25.0)]);
    config.security.token = Some(token.into());
    let relay = start_relay_config(config).await;
    let base = relay.base_url();
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1/streams/telescope/publish/sink");
    let body = serde_json::json!({ "url": sink.entry_url, "token": SINK_TOKEN });

    let r = client.put(&url).json(&body).send().await.expect("put");
    assert_eq!(r.status(), 401, "the relay's token is required");
    let r = client.put(&url).bearer_auth(token).json(&serde_json::json!({ "url": "ftp://x/" })).send().await.expect("put");
    assert_eq!(r.status(), 422);
    assert!(r.text().await.expect("body").contains("url: a WHIP endpoint is an http(s) URL"));
    let r = client.put(format!("{base}/api/v1/streams/nope/publish/sink")).bearer_auth(token).json(&body).send().await.expect("put");
    assert_eq!(r.status(), 404);

    let r = client.put(&url).bearer_auth(token).json(&body).send().await.expect("put");
    assert_eq!(r.status(), 201);
    let info: PublishInfo = r.json().await.expect("the target's status");
    assert_eq!(info.name, "sink");
    assert_eq!(sink.frames_of(0, 5, Duration::from_secs(10)).await.len(), 5, "frames in the sink");

    // The same name again replaces the target: the old session is deleted, a new one starts.
    let r = client.put(&url).bearer_auth(token).json(&body).send().await.expect("put");
    assert_eq!(r.status(), 200);
    assert!(sink.sessions().1[0], "the replaced session was DELETEd");
    assert_eq!(sink.frames_of(1, 5, Duration::from_secs(10)).await.len(), 5, "frames in the new session");

    let r = client.delete(&url).bearer_auth(token).send().await.expect("delete");
    assert_eq!(r.status(), 204);
    let (count, deleted) = sink.sessions();
    assert_eq!((count, deleted[1]), (2, true), "removing the target DELETEd its session");
    let info: StreamInfo = client.get(format!("{base}/api/v1/streams/telescope")).bearer_auth(token).send().await.expect("status").json().await.expect("json");
    assert!(info.publish.is_empty() && info.viewers.publish == 0, "{info:?}");
    let r = client.delete(&url).bearer_auth(token).send().await.expect("delete");
    assert_eq!(r.status(), 404);
    relay.shutdown().await;

    // Without a token on the relay, the route is closed: anyone could send the picture anywhere.
    let relay = start_relay_config(test_config(vec![StreamConfig::test_pattern("telescope", 320, 240, 25.0)])).await;
    let r = client.put(format!("{}/api/v1/streams/telescope/publish/sink", relay.base_url())).json(&body).send().await.expect("put");
    assert_eq!(r.status(), 403);
    relay.shutdown().await;
}
