//! What the benchmarks share: the relay as its own process (the release binary, so its CPU and
//! memory are its own), and medians.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `scopecast` release binary running with a generated config file.
pub struct RelayProcess {
    child: Child,
    pub http: String,
    _dir: std::path::PathBuf,
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free TCP port")
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("free UDP port")
}

impl RelayProcess {
    /// Starts the relay with `streams_toml` (the `[streams.*]` tables), on loopback ports, with
    /// limits high enough for a benchmark's many sessions from one address.
    pub async fn start(streams_toml: &str) -> anyhow::Result<Self> {
        let bin = std::env::current_exe()?.with_file_name("scopecast");
        anyhow::ensure!(bin.exists(), "{} is missing: run `cargo build --release -p scopecast` first", bin.display());
        let (http_port, udp_port) = (free_tcp_port(), free_udp_port());
        let dir = std::env::temp_dir().join(format!("scopecast-bench-relay-{}-{http_port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("relay.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nhttp = \"127.0.0.1:{http_port}\"\nwebrtc_udp = \"127.0.0.1:{udp_port}\"\nmax_sessions = 1000\nsession_rate = 1000\n\n{streams_toml}"
            ),
        )?;
        let log = std::fs::File::create(dir.join("relay.log"))?;
        let child = Command::new(&bin).arg("--config").arg(&config).stdout(Stdio::null()).stderr(log).spawn()?;
        let relay = Self { child, http: format!("http://127.0.0.1:{http_port}"), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if reqwest::get(format!("{}/healthz", relay.http)).await.is_ok_and(|r| r.status().is_success()) {
                return Ok(relay);
            }
            anyhow::ensure!(Instant::now() < deadline, "the relay did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn proc_stat_field(&self, index: usize) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split(' ').nth(index - 3)?.parse().ok()
    }

    /// CPU time the relay has used (user + system, all threads).
    pub fn cpu(&self) -> Duration {
        let ticks = self.proc_stat_field(14).unwrap_or(0) + self.proc_stat_field(15).unwrap_or(0);
        Duration::from_millis(ticks * 1000 / clock_ticks())
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// USER_HZ, the unit of /proc CPU times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> u64 {
    Command::new("getconf").arg("CLK_TCK").output().ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100)
}

/// Median of a sample (mean of the middle two for even sizes).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The p-th percentile (0..=100), nearest rank.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

pub fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// Writes a benchmark's markdown to `target/bench/{name}.md` (scripts/bench.sh splices it into
/// BENCHMARKS.md) and prints it.
pub fn report(name: &str, markdown: &str) {
    println!("{markdown}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.md")), markdown);
}

/// CPU time of the calling thread.
#[allow(unsafe_code)] // std has no per-thread CPU clock; clock_gettime is the portable POSIX call.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is always supported on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of the whole process, all its threads.
#[allow(unsafe_code)] // std has no process CPU clock; clock_gettime is the portable POSIX call.
pub fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec; CLOCK_PROCESS_CPUTIME_ID is always supported on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// PSNR of two luma planes of the same size, dB.
pub fn luma_psnr(a: &[u8], b: &[u8]) -> f64 {
    let se: u64 = a.iter().zip(b).map(|(x, y)| (i64::from(*x) - i64::from(*y)).pow(2) as u64).sum();
    let mse = (se as f64 / a.len() as f64).max(1e-10);
    10.0 * (255.0 * 255.0 / mse).log10()
}

/// Mean SSIM over 8x8 windows every 4 pixels (as x264 and FFmpeg compute it, roughly).
pub fn luma_ssim(a: &[u8], b: &[u8], w: usize, h: usize) -> f64 {
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let (mut total, mut windows) = (0.0, 0usize);
    for y in (0..h.saturating_sub(8)).step_by(4) {
        for x in (0..w.saturating_sub(8)).step_by(4) {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0u64, 0u64, 0u64, 0u64, 0u64);
            for yy in y..y + 8 {
                for xx in x..x + 8 {
                    let (p, q) = (u64::from(a[yy * w + xx]), u64::from(b[yy * w + xx]));
                    (sa, sb, saa, sbb, sab) = (sa + p, sb + q, saa + p * p, sbb + q * q, sab + p * q);
                }
            }
            let n = 64.0;
            let (ma, mb) = (sa as f64 / n, sb as f64 / n);
            let (va, vb, cov) = (saa as f64 / n - ma * ma, sbb as f64 / n - mb * mb, sab as f64 / n - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            windows += 1;
        }
    }
    total / windows.max(1) as f64
}

/// JavaScript for the browser benchmarks: defines `readStrip(src)`, which draws the timecode
/// strip of `src` (a `<video>` or canvas showing a `width`x`height` picture) into a scratch
/// canvas and returns its cells' brightness, each the mean of 3x3 pixels at the cell's centre.
/// Prepend it to a script; [`strip_timecode`] reads what it returns.
pub fn strip_reader_js(width: usize, height: usize) -> String {
    use scopecast_shared::timecode;
    let band = timecode::band_height(height);
    let xs: Vec<usize> = (0..timecode::CELLS).map(|i| timecode::cell_span(i, width)).map(|(a, b)| (a + b) / 2).collect();
    format!(
        r#"
        const readStrip = (() => {{
            const xs = {xs:?}, y = {y}, w = {width}, band = {band};
            const canvas = document.createElement("canvas");
            canvas.width = w; canvas.height = band;
            const ctx = canvas.getContext("2d", {{ willReadFrequently: true }});
            return (src) => {{
                ctx.drawImage(src, 0, 0, w, band, 0, 0, w, band);
                const d = ctx.getImageData(0, 0, w, band).data;
                return xs.map((x) => {{
                    let s = 0;
                    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {{
                        const i = ((y + dy) * w + Math.min(w - 1, Math.max(0, x + dx))) * 4;
                        s += (d[i] + d[i + 1] + d[i + 2]) / 3;
                    }}
                    return s / 9;
                }});
            }};
        }})();
        "#,
        y = band / 2
    )
}

/// Watches `element` of the player on the page (`.scopecast video` or `canvas`) for `secs`: an
/// animation-frame loop reads the timecode strip of what it shows and stamps each new picture
/// when first seen. Returns each picture's latency (capture to first seen, ms) and the
/// overlay's bitrate once a second (kbit/s; empty unless the overlay is shown). Every browser
/// and rung read this way compares with the others.
pub async fn shown_latencies(c: &fantoccini::Client, element: &str, secs: u64, width: usize, height: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let script = strip_reader_js(width, height)
        + r#"
        const [ms, element] = arguments;
        const done = arguments[arguments.length - 1];
        const src = document.querySelector(".scopecast " + element);
        const seen = [], bitrates = [];
        let last = "", nextRate = performance.now() + 1000;
        const end = performance.now() + ms;
        function tick() {
            const cells = readStrip(src);
            const at = performance.timeOrigin + performance.now();
            const key = cells.map((v) => (v > 128 ? "1" : "0")).join("");
            if (key !== last) { last = key; seen.push({ at, cells }); }
            if (performance.now() >= nextRate) {
                nextRate += 1000;
                const dd = document.querySelector('.scopecast-overlay dd[data-key="bitrate"]');
                bitrates.push(dd ? parseFloat(dd.textContent) : NaN);
            }
            if (performance.now() < end) requestAnimationFrame(tick); else done({ seen, bitrates });
        }
        requestAnimationFrame(tick);
    "#;
    let args = vec![serde_json::json!(secs * 1000), serde_json::json!(element)];
    let timeouts = fantoccini::wd::TimeoutConfiguration::new(Some(Duration::from_secs(secs + 30)), None, None);
    c.update_timeouts(timeouts).await?;
    let out = c.execute_async(&script, args).await?;
    let mut latency = Vec::new();
    for s in out["seen"].as_array().into_iter().flatten() {
        let at = s["at"].as_f64().unwrap_or(0.0);
        if let Some(tc) = strip_timecode(&s["cells"]) {
            latency.push(tc.age_ms(at as u64) as f64);
        }
    }
    anyhow::ensure!(latency.len() > 1, "no picture carried a readable strip");
    let bitrates = out["bitrates"].as_array().into_iter().flatten().filter_map(serde_json::Value::as_f64).filter(|v| v.is_finite()).collect();
    Ok((latency, bitrates))
}

/// The timecode in the cells `readStrip` returned (a JSON array), if they hold one.
pub fn strip_timecode(cells: &serde_json::Value) -> Option<scopecast_shared::timecode::Timecode> {
    let bits = cells.as_array().into_iter().flatten().fold(0u64, |acc, v| (acc << 1) | u64::from(v.as_f64().unwrap_or(0.0) > 128.0));
    scopecast_shared::timecode::Timecode::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((percentile(&v, 50.0), percentile(&v, 95.0), percentile(&v, 100.0)), (50.0, 95.0, 100.0));
        assert_eq!(min_max(&[2.0, -1.0, 5.0]), (-1.0, 5.0));
    }
}
