//! The relay process's own cost, for the status API and metrics: CPU (user + system, all
//! threads) over the last seconds, and resident memory, read from /proc (Linux; elsewhere
//! they stay unknown). Parsing is pure and tested; reading is two small files a second.

use crate::stream::RateMeter;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// /proc reports CPU time in USER_HZ ticks, which Linux fixes at 100 per second.
const TICKS_PER_SECOND: f64 = 100.0;

pub struct ProcessStats {
    started: Instant,
    cpu: Mutex<RateMeter>,
    /// Last reading, for metrics: CPU seconds and resident bytes.
    last: Mutex<Option<(f64, u64)>>,
}

impl Default for ProcessStats {
    fn default() -> Self {
        Self { started: Instant::now(), cpu: Mutex::new(RateMeter::new(Duration::from_secs(5))), last: Mutex::new(None) }
    }
}

impl ProcessStats {
    /// Reads /proc/self once; the relay's sampler calls this every second.
    pub fn sample(&self, now: Instant) {
        let ticks = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| cpu_ticks(&s));
        let rss = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| resident_bytes(&s));
        if let (Some(ticks), Some(rss)) = (ticks, rss) {
            crate::lock(&self.cpu).sample(now, ticks);
            *crate::lock(&self.last) = Some((ticks as f64 / TICKS_PER_SECOND, rss));
        }
    }

    /// Percent of one core over the last 5 s (200 on two busy cores).
    pub fn cpu_percent(&self) -> Option<f64> {
        self.last().map(|_| (crate::lock(&self.cpu).rate() / TICKS_PER_SECOND * 1000.0).round() / 10.0)
    }

    /// CPU seconds so far and resident bytes, as last read.
    pub fn last(&self) -> Option<(f64, u64)> {
        *crate::lock(&self.last)
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// utime + stime from /proc/self/stat. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last ')'.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS from /proc/self/status (kB).
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (main) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 150 25 0 0 20 0 9 0 100 1000000 2000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(175));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(cpu_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn resident_memory_is_read_in_bytes() {
        assert_eq!(resident_bytes("Name:\tscopecast\nVmRSS:\t   51200 kB\nThreads:\t9\n"), Some(51200 * 1024));
        assert_eq!(resident_bytes("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_is_measured_on_linux() {
        let stats = ProcessStats::default();
        let t0 = Instant::now();
        stats.sample(t0);
        // Burn some CPU, then sample again.
        let mut x = 0u64;
        while t0.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        stats.sample(Instant::now());
        let cpu = stats.cpu_percent().expect("Linux has /proc");
        assert!(cpu > 20.0, "a busy thread shows ({cpu} %)");
        assert!(stats.last().is_some_and(|(_, rss)| rss > 1 << 20));
    }
}
