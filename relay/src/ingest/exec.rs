//! `exec:` sources: a command whose standard output is MJPEG (multipart, or JPEGs back to
//! back) or H.264 in Annex B: a DSLR's live view through gphoto2, a Raspberry Pi camera
//! through rpicam-vid, a V4L2 device through FFmpeg. See README for recipes.
//!
//! The command runs through `sh -c` (so pipes and quoting work as in a shell) in a process
//! group of its own: on demand or always, as the stream is configured. When it exits or falls
//! silent (a hung camera) the whole group is stopped and the command started again with
//! backoff; when nobody watches an on-demand stream, the stream stops or the relay shuts
//! down, the group gets SIGTERM, and SIGKILL a second later if anything is left. Its standard
//! error goes to the log, at most a few lines per ten seconds. What it prints is told apart
//! and split by `pipe.rs`; JPEGs go to the encoder like an MJPEG camera's, H.264 takes the
//! encoded path (`encoded.rs`: passed through or transcoded, as an RTSP camera's).

use super::encoded::EncodedIngest;
use super::health::{Backoff, SourceEvent, Watchdog};
use super::pipe::{Frame, PipeParser};
use crate::config::VideoMode;
use crate::pipeline::SourceFrame;
use crate::stream::Stream;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines of the command's stderr logged per window; more are counted and summarised.
const STDERR_LINES: u32 = 5;
const STDERR_WINDOW: Duration = Duration::from_secs(10);
/// After SIGTERM, this long before SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(1);

pub fn spawn(stream: Arc<Stream>, command: String, video: VideoMode) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut source = Source {
            command,
            watchdog: Watchdog::new(stream.config.stall_timeout, Instant::now()),
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
            encoded: EncodedIngest::new(video),
            stderr_limit: Arc::default(),
        };
        super::supervise(&stream, &mut source).await;
    })
}

struct Source {
    command: String,
    watchdog: Watchdog,
    backoff: Backoff,
    encoded: EncodedIngest,
    /// Shared by every run, so a command that fails at once and is restarted does not log
    /// its stderr anew each time.
    stderr_limit: Arc<std::sync::Mutex<LineLimiter>>,
}

/// The running command: its process group is stopped when this is dropped, however the run
/// ended, and `sh` is reaped.
struct Running {
    group: Pid,
    child: Option<std::process::Child>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let group = self.group;
        let _ = killpg(group, Signal::SIGTERM);
        let child = self.child.take();
        // A thread, not a task: this also runs while the runtime shuts down.
        std::thread::spawn(move || {
            std::thread::sleep(KILL_AFTER);
            let _ = killpg(group, Signal::SIGKILL);
            if let Some(mut child) = child {
                let _ = child.wait();
            }
        });
    }
}

impl Source {
    /// One run of the command: returns why it ended.
    ///
    /// std's process and a reader thread per pipe, not tokio's: tokio is built here without
    /// its process driver, and a pipe read is a blocking read either way.
    async fn run_once(&mut self, stream: &Arc<Stream>, frames: &mut u64) -> String {
        use std::io::Read;
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new("sh");
        command.arg("-c").arg(&self.command).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => return format!("cannot start the command: {e}"),
        };
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let pid = child.id();
        let mut running = Running { group: Pid::from_raw(pid as i32), child: Some(child) };
        let Some(mut stdout) = stdout else { return "no standard output".to_owned() };
        if let Some(stderr) = stderr {
            let name = stream.name().to_owned();
            let limit = Arc::clone(&self.stderr_limit);
            let _ = std::thread::Builder::new().name(format!("stderr-{name}")).spawn(move || log_stderr(&name, stderr, &limit));
        }
        let (tx, mut chunks) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(8);
        let reader = std::thread::Builder::new().name(format!("stdout-{}", stream.name())).spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let chunk = match stdout.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => Ok(buf[..n].to_vec()),
                    Err(e) => Err(e),
                };
                let failed = chunk.is_err();
                if tx.blocking_send(chunk).is_err() || failed {
                    return;
                }
            }
        });
        if let Err(e) = reader {
            return format!("cannot start a thread to read the command: {e}");
        }
        tracing::debug!(stream = stream.name(), "command started (pid {pid})");
        self.watchdog.connected(Instant::now());
        self.encoded.new_session(stream);
        let mut parser = PipeParser::default();
        let mut skip_logged = false;
        loop {
            let chunk = match tokio::time::timeout_at(self.watchdog.deadline().into(), chunks.recv()).await {
                Err(_) => match self.watchdog.check(Instant::now()) {
                    Some(silence) => return format!("{silence} from the command; restarting it"),
                    None => continue,
                },
                Ok(Some(Err(e))) => return format!("cannot read the command's output: {e}"),
                Ok(Some(Ok(chunk))) => chunk,
                Ok(None) => {
                    while let Some(frame) = parser.finish() {
                        self.frame(stream, frame, frames, &mut skip_logged);
                    }
                    return format!("the command exited ({})", exit_status(&mut running).await);
                }
            };
            self.watchdog.bytes(Instant::now());
            parser.push(&chunk);
            while let Some(frame) = parser.next_frame() {
                self.frame(stream, frame, frames, &mut skip_logged);
            }
        }
    }

    fn frame(&mut self, stream: &Arc<Stream>, frame: Frame, frames: &mut u64, skip_logged: &mut bool) {
        let now = Instant::now();
        match frame {
            Frame::Jpeg(jpeg) => {
                self.watchdog.frame(now);
                *frames += 1;
                stream.deliver(SourceFrame::Jpeg(jpeg), now, crate::timing::wall_ms(now));
            }
            Frame::H264 { annexb, idr } => {
                self.watchdog.frame(now);
                *frames += 1;
                // No timestamps in a pipe: arrival time on the 90 kHz clock.
                let rtp_timestamp = (crate::timing::wall_ms(now) * 90.0) as u64 as u32;
                self.encoded.frame(stream, None, annexb, idr, rtp_timestamp, now);
            }
            Frame::Skipped(why) => {
                if let Some(encoder) = &stream.encoder {
                    encoder.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                }
                if !std::mem::replace(skip_logged, true) {
                    tracing::warn!(stream = stream.name(), "skipping the command's output: {why} (further skips of this run are counted, not logged)");
                }
            }
        }
    }
}

impl super::Connection for Source {
    async fn run(&mut self, stream: &Arc<Stream>) {
        loop {
            let mut frames = 0u64;
            let why = self.run_once(stream, &mut frames).await;
            self.encoded.end_session();
            stream.report(SourceEvent::Failed(why));
            if frames > 0 {
                self.backoff.reset();
            }
            tokio::time::sleep(self.backoff.next_delay(rand::random())).await;
        }
    }
}

/// How the command ended, once its output closed (it may take a moment to exit).
async fn exit_status(running: &mut Running) -> String {
    for _ in 0..40 {
        if let Some(Ok(Some(status))) = running.child.as_mut().map(std::process::Child::try_wait) {
            return status.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    "its output closed".to_owned()
}

/// The command's standard error, line by line into the log: at most `STDERR_LINES` per
/// `STDERR_WINDOW` (gphoto2 and FFmpeg can print a line per frame), the rest counted. Runs on
/// a thread of its own until the pipe closes.
fn log_stderr(stream: &str, stderr: std::process::ChildStderr, limiter: &std::sync::Mutex<LineLimiter>) {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        let verdict = crate::lock(limiter).allow(Instant::now());
        match verdict {
            LineVerdict::Log { suppressed: 0 } => tracing::warn!(stream, "command: {text}"),
            LineVerdict::Log { suppressed } => tracing::warn!(stream, "command: {text} ({suppressed} earlier lines not logged)"),
            LineVerdict::Drop => {}
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum LineVerdict {
    Log { suppressed: u64 },
    Drop,
}

/// Pure: how many lines a window lets through. Time is an argument.
#[derive(Default)]
struct LineLimiter {
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LineLimiter {
    fn allow(&mut self, now: Instant) -> LineVerdict {
        if self.window_start.is_none_or(|s| now.saturating_duration_since(s) >= STDERR_WINDOW) {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < STDERR_LINES {
            self.in_window += 1;
            LineVerdict::Log { suppressed: std::mem::take(&mut self.suppressed) }
        } else {
            self.suppressed += 1;
            LineVerdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chatty_command_is_logged_a_few_lines_per_window() {
        let mut l = LineLimiter::default();
        let t0 = Instant::now();
        for _ in 0..STDERR_LINES {
            assert_eq!(l.allow(t0), LineVerdict::Log { suppressed: 0 });
        }
        for _ in 0..100 {
            assert_eq!(l.allow(t0 + Duration::from_secs(1)), LineVerdict::Drop);
        }
        assert_eq!(l.allow(t0 + STDERR_WINDOW), LineVerdict::Log { suppressed: 100 }, "the next window says how many were dropped");
        assert_eq!(l.allow(t0 + STDERR_WINDOW), LineVerdict::Log { suppressed: 0 });
    }
}
