//! The `scopecast` binary as a user runs it: flags, the token from the environment, the URLs
//! it prints, config errors and their exit code, and a clean stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn scopecast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scopecast"))
}

#[test]
fn runs_with_a_stream_flag_prints_its_urls_serves_them_and_stops_on_sigterm() {
    let mut child = scopecast()
        .args(["--http", "127.0.0.1:0", "--webrtc-udp", "127.0.0.1:0", "--stream", "deep=test:640x480@0.5"])
        .env("SCOPECAST_TOKEN", "from-the-environment")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run scopecast");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let banner: Vec<String> = lines.by_ref().take(3).map(|l| l.expect("line")).collect();
    let base = banner[0].split_whitespace().find(|w| w.starts_with("http://")).expect("page URL").trim_end_matches('/').to_owned();
    assert!(banner[1].contains("stream deep") && banner[1].contains(&format!("{base}/deep/whep")), "{banner:?}");
    assert!(banner[2].contains("UDP port"), "{banner:?}");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = format!("{base}/api/v1/streams");
    let refused = rt.block_on(async { reqwest::get(&api).await }).expect("GET");
    assert_eq!(refused.status(), 401, "the token from SCOPECAST_TOKEN is required");
    let client = reqwest::Client::new();
    let list: serde_json::Value = rt.block_on(async { client.get(&api).bearer_auth("from-the-environment").send().await?.json().await }).expect("stream list");
    assert_eq!(list["streams"][0]["name"], "deep");
    assert_eq!((list["streams"][0]["width"].as_u64(), list["streams"][0]["max_fps"].as_f64()), (Some(640), Some(0.5)));
    let page = rt.block_on(async { reqwest::get(format!("{base}/deep/")).await?.text().await }).expect("page");
    assert!(page.contains("mountPage"), "the player page");
    // The player is built into the binary: its wasm is served from it.
    let wasm = rt.block_on(async { reqwest::get(format!("{base}/static/player/scopecast_client_bg.wasm")).await }).expect("wasm");
    assert_eq!(wasm.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/wasm"));
    let bytes = rt.block_on(wasm.bytes()).expect("wasm body");
    assert_eq!(&bytes[..4], b"\0asm", "a WebAssembly module");

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "scopecast did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit, got {status}");
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("shutting down"));
}

#[test]
fn config_errors_name_the_key_and_exit_with_status_2() {
    let dir = std::env::temp_dir().join(format!("scopecast-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cases = [
        ("[streams.scope]\nsource = \"http://cam.local/stream\"\nwidht = 640\n", "widht"),
        ("[streams.scope]\nsource = \"ftp://cam.local/stream\"\n", "streams.scope.source"),
        ("[streams.scope]\nsource = \"test:10x10\"\n", "streams.scope.width"),
        ("[server]\nhttp = \"not an address\"\n", "http"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).expect("write config");
        let out = scopecast().arg("--config").arg(&path).arg("--check-config").output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(stderr.contains("configuration error") && stderr.contains(key), "{text:?} should name {key}: {stderr}");
    }
    let out = scopecast().args(["--stream", "no-equals-sign", "--check-config"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME=SOURCE"));

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../scopecast.example.toml");
    let out = scopecast().args(["--config", example, "--check-config"]).output().expect("run");
    assert!(out.status.success(), "the example config is valid: {}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the relay with `args` until its start-up has been logged, then stops it; returns stderr.
fn startup_log(args: &[&str]) -> String {
    let mut child = scopecast()
        .args(["--http", "127.0.0.1:0", "--webrtc-udp", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scopecast");
    // The banner comes after the start-up log lines.
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("banner");
    assert!(first.contains("scopecast is running"), "{first}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    let out = child.wait_with_output().expect("wait");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn logs_have_no_colour_codes_off_a_terminal_say_which_simd_code_runs_and_can_be_json() {
    let text = startup_log(&[]);
    assert!(!text.contains('\u{1b}'), "no ANSI escape codes when stderr is a pipe: {text:?}");
    let simd = text.lines().find(|l| l.contains("H.264 encoder:")).unwrap_or_else(|| panic!("the codecs' SIMD paths are logged: {text}"));
    #[cfg(target_arch = "x86_64")]
    assert!(simd.contains("openh264 assembly") && simd.contains("libjpeg-turbo"), "{simd}");

    let json = startup_log(&["--log-format", "json"]);
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "{json}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string() && v["timestamp"].is_string(), "{line}");
    }
}
