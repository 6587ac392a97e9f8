use clap::Parser;
use scopecast::config::{Cli, Config};
use scopecast::Relay;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,webrtc=warn,webrtc_ice=warn,webrtc_srtp=error,webrtc_dtls=warn")))
        .init();
    let cli = Cli::parse();
    let config = match Config::from_cli(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scopecast: configuration error: {e}");
            std::process::exit(2);
        }
    };
    if cli.check_config {
        println!("configuration OK: {} stream(s), HTTP {}, WebRTC UDP {}", config.streams.len(), config.http, config.ice.udp);
        return Ok(());
    }
    let relay = Relay::start(config.clone()).await?;
    let base = format!("http://{}", relay.http_addr());
    println!("scopecast is running. Open {base}/ in a browser.");
    for s in &config.streams {
        println!("  stream {:<12} page {base}/{}/   WHEP {base}/{}/whep", s.name, s.name, s.name);
    }
    println!("  WebRTC media on UDP port {}", relay.udp_port());
    tokio::signal::ctrl_c().await?;
    println!("shutting down");
    relay.shutdown().await;
    Ok(())
}
