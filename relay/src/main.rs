use clap::Parser;
use scopecast::config::LogFormat;
use scopecast::config::{Cli, Config};
use scopecast::Relay;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let config = match Config::from_cli(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scopecast: configuration error: {e}");
            std::process::exit(2);
        }
    };
    if cli.check_config {
        let scheme = if config.tls.is_some() { "HTTPS" } else { "HTTP" };
        println!("configuration OK: {} stream(s), {scheme} {}, WebRTC UDP {}", config.streams.len(), config.http, config.ice.udp);
        return Ok(());
    }
    let relay = Relay::start(config.clone()).await?;
    let base = relay.base_url();
    println!("scopecast is running. Open {base}/ in a browser.");
    if let Some(cert) = relay.certificate() {
        println!("  HTTPS certificate for {}", cert.names.join(", "));
        println!("    SHA-256 {}", cert.sha256);
        println!("    public key SHA-256 (base64) {}", cert.spki_sha256);
        if matches!(config.tls, Some(scopecast::config::TlsConfig::SelfSigned { .. })) {
            println!("    self-signed: a browser asks once; check that it shows this fingerprint");
        }
    }
    for s in &config.streams {
        println!("  stream {:<12} page {base}/{}/   WHEP {base}/{}/whep", s.name, s.name, s.name);
    }
    println!("  WebRTC media on UDP port {}", relay.udp_port());
    stop_requested().await?;
    println!("shutting down");
    relay.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM from a service manager (systemd, a container runtime).
async fn stop_requested() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

/// Logs go to stderr: stdout carries only the banner with the URLs, for people and scripts.
/// Colours only on a terminal (journald, files and container logs would keep the escape codes);
/// JSON lines for log shippers.
fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,webrtc=warn,webrtc_ice=warn,webrtc_srtp=error,webrtc_dtls=warn"));
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
}
