//! Real WHIP publishers for the ingest tests, each a child process killed when dropped:
//! GStreamer's webrtcbin (tests/fixtures/whip_publisher.py, Debian's python3) and aiortc
//! (tests/fixtures/whip_aiortc.py, in the virtualenv scripts/setup-aiortc.sh makes). Both print
//! one line per event; `wait_for` reads them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct WhipPublisher {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl WhipPublisher {
    /// GStreamer's webrtcbin publishing to `url`; `args` go to the fixture (`--gop 250`,
    /// `--audio`, `--profile high`, `--no-delete`...).
    pub fn gstreamer(url: &str, token: Option<&str>, args: &[&str]) -> Self {
        let script = format!("{}/fixtures/whip_publisher.py", env!("CARGO_MANIFEST_DIR"));
        let mut command = Command::new("/usr/bin/python3");
        command.arg(script);
        Self::spawn(command, url, token, args, "python3 with GStreamer's webrtcbin (scripts/setup-debian.sh test installs it)")
    }

    /// aiortc publishing to `url`.
    pub fn aiortc(url: &str, token: Option<&str>, args: &[&str]) -> Self {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = root.join("target/third-party/aiortc/bin/python");
        let mut command = Command::new(python);
        command.arg(root.join("tests/fixtures/whip_aiortc.py"));
        Self::spawn(command, url, token, args, "aiortc's virtualenv (scripts/setup-aiortc.sh makes it)")
    }

    fn spawn(mut command: Command, url: &str, token: Option<&str>, args: &[&str], what: &str) -> Self {
        command.args(["--url", url]).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(line);
                }
            });
        }
        Self { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// The first line starting with `prefix`, waiting up to `secs`.
    pub async fn wait_for(&self, prefix: &str, secs: u64) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.starts_with(prefix)) {
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM: the publisher DELETEs its session and exits. Returns its exit status.
    pub fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL: a publisher that crashes, leaving its session behind.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WhipPublisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
