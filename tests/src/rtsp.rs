//! Real RTSP servers as cameras: GStreamer's RTSP server (tests/fixtures/rtsp_camera.py, TCP
//! and UDP) and VLC's RTSP output (UDP only: it answers a TCP SETUP with 461). Each runs as a
//! child process, killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RtspCamera {
    child: Child,
    pub port: u16,
    pub path: &'static str,
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl RtspCamera {
    /// GStreamer's RTSP server with x264 at `rtsp://127.0.0.1:PORT/stream`; `args` go to the
    /// fixture (`--gop 100 --profile high --bframes 2 --user u --password p`...).
    pub fn gstreamer(port: u16, args: &[&str]) -> Self {
        let script = format!("{}/fixtures/rtsp_camera.py", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with GStreamer's RTSP server (scripts/setup-debian.sh test installs it)");
        let stdout = child.stdout.take().expect("stdout");
        let ready = BufReader::new(stdout).lines().next().and_then(Result::ok);
        assert_eq!(ready.as_deref(), Some("ready"), "the GStreamer RTSP camera did not start");
        Self { child, port, path: "stream" }
    }

    /// VLC serving `file` (looped) over RTSP as user `nobody`: VLC refuses to run as root.
    pub fn vlc(port: u16, file: &std::path::Path) -> Self {
        let sout = format!("#rtp{{sdp=rtsp://127.0.0.1:{port}/stream}}");
        let mut command = if is_root() { Command::new("runuser") } else { Command::new("cvlc") };
        if is_root() {
            command.args(["-u", "nobody", "--", "cvlc"]);
        }
        let child = command
            .args(["-q", "--no-audio", "--loop", "--sout-keep", "--sout", &sout])
            .arg(file)
            .env("HOME", "/tmp")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("VLC (scripts/setup-debian.sh test installs vlc-bin)");
        let camera = Self { child, port, path: "stream" };
        // VLC prints nothing useful: wait for its RTSP port to answer.
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "VLC's RTSP output did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        camera
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/{}", self.port, self.path)
    }

    /// `rtsp://user:password@...`
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("rtsp://{user}:{password}@127.0.0.1:{}/{}", self.port, self.path)
    }

    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        // runuser passes SIGKILL on to nothing: end VLC's whole process group instead.
        let _ = Command::new("pkill").args(["-KILL", "-P", &self.child.id().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RtspCamera {
    fn drop(&mut self) {
        self.kill();
    }
}

fn is_root() -> bool {
    // /proc/self belongs to our effective user (no unsafe geteuid call needed).
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// A looped H.264 file for VLC: FFmpeg's moving test source, Constrained Baseline, one IDR
/// every `gop` frames at 25 fps, made once per test binary.
pub fn h264_file(gop: u32) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("scopecast-rtsp-{}-gop{gop}.ts", std::process::id()));
    if !path.exists() {
        let status = Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", "8"])
            .args(["-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", &gop.to_string(), "-bf", "0"])
            .arg(&path)
            .status()
            .expect("ffmpeg");
        assert!(status.success(), "ffmpeg could not make the H.264 file");
        // VLC runs as another user.
        let _ = std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644));
    }
    path
}
