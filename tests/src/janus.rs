//! A real SFU to publish to: Janus (Debian's `janus`) with its VideoRoom recording H.264, behind
//! simple-whip-server (its WHIP front end, unpacked by scripts/setup-whip-server.sh), both in a
//! network namespace joined to this one by a veth pair (Janus gathers no candidates on loopback
//! alone):
//!
//! ```text
//!   this namespace (the relay)  10.78.1.1 ──── 10.78.1.2  ns J: Janus, WHIP on :7080
//! ```
//! `recording()` turns what Janus recorded into MP4 with `janus-pp-rec` and reads it back with
//! `ffprobe`: frames and size as Janus received them.

use crate::netns::{link, Netns};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const JANUS_IP: &str = "10.78.1.2";
const LOCAL_CIDR: &str = "10.78.1.1/24";
const ROOM: u32 = 1234;

/// Where scripts/setup-whip-server.sh unpacks simple-whip-server and its Node modules.
pub fn whip_server_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/third-party/simple-whip-server")
}

/// Why Janus cannot run here, if it cannot (the test then fails with this message).
pub fn missing() -> Option<String> {
    let have = |p: &str| Command::new("sh").args(["-c", &format!("command -v {p}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    for program in ["janus", "janus-pp-rec", "ffprobe", "node"] {
        if !have(program) {
            return Some(format!("{program} is missing: run scripts/setup-debian.sh test and scripts/setup-whip-server.sh"));
        }
    }
    (!whip_server_dir().join("src/server.js").exists()).then(|| "simple-whip-server is not unpacked: run scripts/setup-whip-server.sh".to_owned())
}

pub struct JanusLab {
    ns: Netns,
    dir: PathBuf,
    janus: Option<Child>,
    whip: Option<Child>,
}

/// One recording: what `ffprobe` counted in Janus's recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recording {
    pub frames: u64,
    pub width: u32,
    pub height: u32,
}

impl JanusLab {
    /// Janus and simple-whip-server in a namespace of their own, up and answering.
    pub fn start() -> anyhow::Result<Self> {
        if let Some(why) = missing() {
            anyhow::bail!(why);
        }
        let ns = Netns::add("j")?;
        link(None, LOCAL_CIDR, &ns, &format!("{JANUS_IP}/24"), "9")?;
        let dir = std::env::temp_dir().join(format!("scopecast-janus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["conf", "plugins", "transports", "rec", "none"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // Only the two libraries we need: Janus loads every plugin in its folder.
        let lib = "/usr/lib/x86_64-linux-gnu/janus";
        std::os::unix::fs::symlink(format!("{lib}/plugins/libjanus_videoroom.so"), dir.join("plugins/libjanus_videoroom.so"))?;
        std::os::unix::fs::symlink(format!("{lib}/transports/libjanus_websockets.so"), dir.join("transports/libjanus_websockets.so"))?;
        let d = dir.display();
        std::fs::write(
            dir.join("conf/janus.jcfg"),
            format!(
                "general: {{\n configs_folder = \"{d}/conf\"\n plugins_folder = \"{d}/plugins\"\n transports_folder = \"{d}/transports\"\n \
                 events_folder = \"{d}/none\"\n loggers_folder = \"{d}/none\"\n debug_level = 4\n}}\nmedia: {{\n rtp_port_range = \"20000-20200\"\n}}\n"
            ),
        )?;
        // fir_freq: Janus asks for a keyframe (PLI and FIR) every 2 s, as SFUs do.
        std::fs::write(
            dir.join("conf/janus.plugin.videoroom.jcfg"),
            format!("general: {{\n}}\nroom-{ROOM}: {{\n description = \"scopecast\"\n publishers = 3\n bitrate = 4000000\n fir_freq = 2\n videocodec = \"h264\"\n record = true\n rec_dir = \"{d}/rec\"\n}}\n"),
        )?;
        std::fs::write(
            dir.join("conf/janus.transport.websockets.jcfg"),
            "general: {\n json = \"indented\"\n ws = true\n ws_port = 8188\n ws_ip = \"127.0.0.1\"\n wss = false\n}\nadmin: {\n admin_ws = false\n admin_wss = false\n}\n",
        )?;
        // simple-whip-server reads ./config.js beside its server.js: a copy with ours.
        let whip_dir = dir.join("whip");
        std::fs::create_dir_all(whip_dir.join("src"))?;
        let source = whip_server_dir();
        for file in ["server.js", "whip-janus.js"] {
            std::fs::copy(source.join("src").join(file), whip_dir.join("src").join(file)).with_context(|| format!("copy {file}"))?;
        }
        std::fs::write(
            whip_dir.join("src/config.js"),
            "module.exports = { janus: { address: 'ws://127.0.0.1:8188' }, port: 7080, rest: '/whip', allowTrickle: true, strictETags: false, iceServers: [] };\n",
        )?;
        let mut lab = Self { ns, dir, janus: None, whip: None };
        lab.start_janus()?;
        let log = std::fs::File::create(lab.dir.join("whip.log"))?;
        let whip = lab
            .ns
            .command("node")
            .arg("src/server.js")
            .current_dir(&whip_dir)
            .env("NODE_PATH", source.join("node_modules"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start simple-whip-server")?;
        lab.whip = Some(whip);
        lab.wait_for_log("whip.log", "WHIP REST API OK", Duration::from_secs(20))?;
        Ok(lab)
    }

    fn start_janus(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join("janus.log"))?;
        let conf = self.dir.join("conf");
        let janus = self
            .ns
            .command("janus")
            .arg("-F")
            .arg(&conf)
            .arg("-C")
            .arg(conf.join("janus.jcfg"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start janus")?;
        self.janus = Some(janus);
        self.wait_for_log("janus.log", "WebSockets thread started", Duration::from_secs(20))
    }

    fn wait_for_log(&self, file: &str, line: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
            if text.contains(line) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{file} never said '{line}':\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates a WHIP endpoint `id` on the VideoRoom, guarded by `token`; returns its URL.
    pub async fn create_endpoint(&self, id: &str, token: &str) -> anyhow::Result<String> {
        let base = format!("http://{JANUS_IP}:7080/whip");
        let body = serde_json::json!({ "id": id, "room": ROOM, "token": token });
        let r = reqwest::Client::new().post(format!("{base}/create")).json(&body).send().await?;
        anyhow::ensure!(r.status().is_success(), "POST /whip/create: {}", r.status());
        Ok(format!("{base}/endpoint/{id}"))
    }

    /// Whether simple-whip-server has a publisher on endpoint `id` right now.
    pub async fn endpoint_busy(&self, id: &str) -> anyhow::Result<bool> {
        let list: serde_json::Value = reqwest::get(format!("http://{JANUS_IP}:7080/whip/endpoints")).await?.json().await?;
        let endpoint = list.as_array().and_then(|a| a.iter().find(|e| e["id"] == id)).context("no such endpoint")?;
        Ok(endpoint["enabled"] == true)
    }

    /// The video recordings Janus has written (one per publisher session).
    pub fn recordings(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("rec"))
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        let name = p.to_string_lossy();
                        name.ends_with(".mjr") && name.contains("-video")
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Converts a recording with `janus-pp-rec` and counts its frames with `ffprobe`.
    pub fn probe(&self, mjr: &Path) -> anyhow::Result<Recording> {
        let mp4 = mjr.with_extension("mp4");
        let out = Command::new("janus-pp-rec").arg(mjr).arg(&mp4).output().context("janus-pp-rec")?;
        anyhow::ensure!(out.status.success() && mp4.exists(), "janus-pp-rec failed: {}", String::from_utf8_lossy(&out.stderr));
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames,width,height", "-of", "csv=p=0"])
            .arg(&mp4)
            .output()
            .context("ffprobe")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = text.trim().split(',').collect();
        anyhow::ensure!(fields.len() == 3, "ffprobe said '{}' ({})", text.trim(), String::from_utf8_lossy(&out.stderr));
        Ok(Recording { width: fields[0].parse()?, height: fields[1].parse()?, frames: fields[2].parse()? })
    }

    /// Janus's and the WHIP server's logs, for a failing test's message.
    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        let tail = |s: String| s.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        format!("--- janus.log\n{}\n--- whip.log\n{}", tail(read("janus.log")), tail(read("whip.log")))
    }
}

impl Drop for JanusLab {
    fn drop(&mut self) {
        // By pid: killing a wrapper would leave node running.
        for child in [self.whip.take(), self.janus.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
