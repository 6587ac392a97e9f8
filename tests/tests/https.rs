//! HTTPS: everything the relay serves over TLS, certificate files swapped while running, a
//! self-signed certificate for a LAN, and Chromium playing from an HTTPS page of the relay and
//! from an HTTPS page of another origin that embeds `<scopecast-player>`.

use scopecast::config::{StreamConfig, TlsConfig};
use scopecast::tls::Certificate;
use scopecast_tests::browser::{count, wait_for_page, Browser};
use scopecast_tests::viewer::make_offer;
use scopecast_tests::{base_url, eventually_async, start_relay_config, test_config};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn pattern() -> Vec<StreamConfig> {
    vec![StreamConfig::test_pattern("telescope", 640, 360, 25.0)]
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scopecast-https-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Replaces a file the way certbot and cert-manager do: a new file renamed over the old.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A client that trusts `roots`, opens a new connection for every request (so each one sees
/// the certificate served at that moment), and reports the peer's certificate.
fn client(roots: &[&Path]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().tls_info(true).pool_max_idle_per_host(0).timeout(Duration::from_secs(10));
    for root in roots {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(root).expect("root")).expect("PEM"));
    }
    builder.build().expect("client")
}

/// SHA-256 of the certificate a fresh connection is served, as the relay prints it.
async fn served_fingerprint(client: &reqwest::Client, base: &str) -> Option<String> {
    let res = client.get(format!("{base}/healthz")).send().await.ok()?;
    let der = res.extensions().get::<reqwest::tls::TlsInfo>()?.peer_certificate()?.to_vec();
    Some(Sha256::digest(&der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_page_api_media_and_whep_and_a_replaced_certificate_takes_over_without_a_restart() {
    let (first_dir, second_dir, live) = (temp_dir("first"), temp_dir("second"), temp_dir("live"));
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    let first = Certificate::self_signed(&first_dir, &names).expect("first certificate");
    let second = Certificate::self_signed(&second_dir, &names).expect("second certificate");
    let (cert, key) = (live.join("fullchain.pem"), live.join("privkey.pem"));
    std::fs::copy(first_dir.join("cert.pem"), &cert).expect("cert");
    std::fs::copy(first_dir.join("key.pem"), &key).expect("key");

    // A key that is not the certificate's is refused at start, naming the file.
    let mut config = test_config(pattern());
    config.tls = Some(TlsConfig::Files { cert: cert.clone(), key: second_dir.join("key.pem") });
    let refused = scopecast::Relay::start(config.clone()).await.err().expect("a mismatched key is refused");
    assert!(refused.to_string().contains("fullchain.pem") && refused.to_string().contains("does not belong"), "{refused}");

    config.tls = Some(TlsConfig::Files { cert: cert.clone(), key: key.clone() });
    let relay = start_relay_config(config).await;
    let base = base_url(&relay);
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let c = client(&[&first_dir.join("cert.pem"), &second_dir.join("cert.pem")]);

    for (path, content_type) in
        [("/", "text/html"), ("/static/scopecast-player.js", "javascript"), ("/api/v1/streams", "application/json"), ("/telescope/snapshot.jpg", "image/jpeg")]
    {
        let res = c.get(format!("{base}{path}")).send().await.unwrap_or_else(|e| panic!("GET {path} over HTTPS: {e}"));
        assert_eq!(res.status(), 200, "{path}");
        let ct = res.headers()["content-type"].to_str().expect("content type").to_owned();
        assert!(ct.contains(content_type), "{path}: {ct}");
    }
    let mut mjpeg = c.get(format!("{base}/telescope/mjpeg")).send().await.expect("MJPEG over HTTPS");
    assert!(mjpeg.headers()["content-type"].to_str().expect("ct").starts_with("multipart/x-mixed-replace"));
    let chunk = tokio::time::timeout(Duration::from_secs(5), mjpeg.chunk()).await.expect("an MJPEG part in time").expect("read").expect("bytes");
    assert!(!chunk.is_empty());
    drop(mjpeg);
    let (_pc, offer) = make_offer().await.expect("offer");
    let post = c.post(format!("{base}/telescope/whep")).header("content-type", "application/sdp").body(offer).send().await.expect("WHEP over HTTPS");
    assert_eq!(post.status(), 201);
    let session = format!("{base}{}", post.headers()["location"].to_str().expect("location"));
    assert_eq!(c.delete(&session).send().await.expect("DELETE").status(), 200);

    // Plain HTTP on the HTTPS port gets no page.
    let plain = reqwest::get(format!("http://{}/", relay.http_addr())).await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true), "plain HTTP is not served on the HTTPS port");

    assert_eq!(served_fingerprint(&c, &base).await.as_deref(), Some(first.sha256.as_str()));
    // Renewal: key first, then the chain, as a renewal tool writes them.
    replace(&key, &std::fs::read(second_dir.join("key.pem")).expect("key"));
    replace(&cert, &std::fs::read(second_dir.join("cert.pem")).expect("cert"));
    eventually_async(20, "new connections to get the renewed certificate", || async {
        served_fingerprint(&c, &base).await.as_deref() == Some(second.sha256.as_str())
    })
    .await;

    // A broken file (half written, wrong content) keeps the certificate that works.
    replace(&cert, b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(served_fingerprint(&c, &base).await.as_deref(), Some(second.sha256.as_str()), "the working certificate stays");

    relay.shutdown().await;
    for dir in [first_dir, second_dir, live] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Serves one HTML page over HTTPS on another port: another origin, as a telescope UI would be.
async fn https_page(cert: &Certificate, html: String) -> (String, tokio::task::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tls = scopecast::tls::server_config(cert).await.expect("rustls");
    let app = axum::Router::new().route("/", axum::routing::get(move || async move { axum::response::Html(html) }));
    let server = axum_server::from_tcp_rustls(listener, tls).expect("server");
    let task = tokio::spawn(async move {
        let _ = server.serve(app.into_make_service()).await;
    });
    (format!("https://localhost:{}", addr.port()), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_from_an_https_page_and_embeds_the_player_in_an_https_page_of_another_origin() {
    let dir = temp_dir("self-signed");
    let mut config = test_config(pattern());
    config.tls = Some(TlsConfig::SelfSigned { dir: dir.clone(), names: vec![] });
    let relay = start_relay_config(config).await;
    let cert = relay.certificate().expect("HTTPS is on").clone();
    assert!(cert.names.iter().any(|n| n == "127.0.0.1") && cert.names.iter().any(|n| n == "localhost"), "{:?}", cert.names);
    assert!(dir.join("key.pem").exists(), "the self-signed key is kept");
    let base = base_url(&relay);

    // Trusted the way a user accepts it: by the key's fingerprint, which the relay printed.
    let browser = Browser::start_with(&[format!("--ignore-certificate-errors-spki-list={}", cert.spki_sha256)]).await.expect("headless Chromium");
    let c = &browser.client;
    c.goto(&format!("{base}/telescope/")).await.expect("open the HTTPS page");
    let live = wait_for_page(c, "the HTTPS page playing", 20, |v| v["state"] == "live" && count(v, "frames") >= 10).await;
    assert_eq!(live["secure"], true, "an HTTPS page is a secure context: {live}");
    assert_eq!(live["transport"], "webrtc", "{live}");
    c.goto("about:blank").await.expect("leave");
    eventually_async(10, "the first page's session to end", || async { relay.session_count() == 0 }).await;

    // A telescope UI on another HTTPS origin imports the element from the relay.
    let html = format!(
        r#"<!doctype html><meta charset="utf-8"><title>My telescope UI</title>
        <script type="module">
          import "{base}/static/scopecast-player.js";
          const el = document.createElement("scopecast-player");
          el.setAttribute("src", "{base}/telescope");
          el.style.cssText = "display:block;width:640px;height:360px";
          document.body.append(el);
        </script>"#
    );
    let (ui, page_server) = https_page(&cert, html).await;
    c.goto(&format!("{ui}/")).await.expect("open the UI page");
    let embedded = wait_for_page(c, "the embedded player playing cross-origin", 20, |v| v["state"] == "live" && count(v, "frames") >= 10).await;
    assert_eq!(embedded["secure"], true, "{embedded}");
    assert_eq!(c.current_url().await.expect("url").origin().ascii_serialization(), ui, "the page is the UI's origin, not the relay's");
    assert_eq!(relay.session_count(), 1);
    browser.close().await;
    page_server.abort();
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
