//! Stills: a stream's new frames kept as files, to look back at how a stacked image grew or
//! what the sky did overnight. Each is the camera's original JPEG (`{capture ms}-{n}.jpg`) with
//! a JSON sidecar ([`StillFile`]: capture time, stream, size, the stretch at the time), in
//! the stream's directory, under a size cap: the oldest go first.
//!
//! [`StillStore`] is the directory and its index (blocking file I/O: call it from blocking
//! threads); [`record`] is the task that feeds it from the stream's stills.

use crate::config::StillsConfig;
use crate::lock;
use crate::media::jpeg::JpegDecoder;
use crate::stream::{Stream, ViewerKind};
use scopecast_shared::api::StillFile;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct StillStore {
    dir: PathBuf,
    max_bytes: u64,
    /// Oldest first, with the bytes each takes on disk (JPEG and sidecar).
    index: Mutex<Index>,
}

#[derive(Default)]
struct Index {
    files: VecDeque<(StillFile, u64)>,
    total: u64,
}

/// A JPEG name this store wrote: digits, a dash, digits, `.jpg`. Anything else (`..`, a slash)
/// is not served.
pub fn is_still_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".jpg") else { return false };
    let Some((ms, n)) = stem.split_once('-') else { return false };
    !ms.is_empty() && !n.is_empty() && ms.bytes().chain(n.bytes()).all(|b| b.is_ascii_digit())
}

impl StillStore {
    /// Opens (creating) the directory and indexes the stills already there, so the cap holds
    /// across restarts.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_still_name(&name) {
                continue;
            }
            let sidecar = dir.join(name.replace(".jpg", ".json"));
            let Ok(file) = std::fs::read(&sidecar).map_err(|_| ()).and_then(|b| serde_json::from_slice::<StillFile>(&b).map_err(|_| ())) else {
                continue; // not ours, or half written: left alone
            };
            let on_disk = entry.metadata()?.len() + std::fs::metadata(&sidecar)?.len();
            found.push((file, on_disk));
        }
        found.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let total = found.iter().map(|f| f.1).sum();
        let store = Self { dir: dir.to_owned(), max_bytes, index: Mutex::new(Index { files: found.into(), total }) };
        store.enforce_cap()?;
        Ok(store)
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Writes the JPEG and its sidecar (each to a temporary name, then renamed, so a reader
    /// never sees half a file), then deletes the oldest beyond the cap.
    pub fn save(&self, file: StillFile, jpeg: &[u8]) -> std::io::Result<()> {
        let sidecar = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        let jpeg_path = self.dir.join(&file.name);
        write_atomically(&jpeg_path, jpeg)?;
        write_atomically(&jpeg_path.with_extension("json"), &sidecar)?;
        let on_disk = jpeg.len() as u64 + sidecar.len() as u64;
        {
            let mut index = lock(&self.index);
            index.total += on_disk;
            index.files.push_back((file, on_disk));
        }
        self.enforce_cap()
    }

    fn enforce_cap(&self) -> std::io::Result<()> {
        loop {
            let oldest = {
                let mut index = lock(&self.index);
                // The newest stays even if it alone is over the cap.
                if index.total <= self.max_bytes || index.files.len() <= 1 {
                    return Ok(());
                }
                let Some((file, size)) = index.files.pop_front() else { return Ok(()) };
                index.total -= size;
                file.name
            };
            let jpeg = self.dir.join(&oldest);
            for path in [jpeg.with_extension("json"), jpeg] {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
    }

    /// Newest first, at most `limit`; and the bytes they all take.
    pub fn list(&self, limit: usize) -> (Vec<StillFile>, u64) {
        let index = lock(&self.index);
        (index.files.iter().rev().take(limit).map(|f| f.0.clone()).collect(), index.total)
    }

    /// Where a still in the index is (`None` for any other name).
    pub fn path_of(&self, name: &str) -> Option<(PathBuf, StillFile)> {
        if !is_still_name(name) {
            return None;
        }
        let index = lock(&self.index);
        let file = index.files.iter().find(|f| f.0.name == name)?.0.clone();
        Some((self.dir.join(name), file))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("part");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// Keeps the stream's new frames as they come (or one every `config.every`) until the stream
/// stops. It counts as a consumer, so an on-demand camera keeps running for it.
pub async fn record(stream: Arc<Stream>, store: Arc<StillStore>, config: StillsConfig) {
    let _demand = stream.demand.join(ViewerKind::Stills);
    let mut stills = stream.subscribe_stills();
    let (mut last_seq, mut last_kept) = (0u64, None::<u64>);
    let mut errors_logged_at: Option<Instant> = None;
    loop {
        tokio::select! {
            changed = stills.changed() => if changed.is_err() { return },
            () = stream.stopped() => return,
        }
        let Some(still) = stills.borrow_and_update().clone() else { continue };
        let every_ms = config.every.as_millis() as u64;
        if still.seq == last_seq || last_kept.is_some_and(|t| still.captured_ms < t + every_ms) {
            continue;
        }
        last_seq = still.seq;
        let captured_ms = still.captured_ms;
        let (store, name, stretch, levels) = (Arc::clone(&store), stream.name().to_owned(), stream.stretch.get(), stream.stretch.applied());
        let kept = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let jpeg = still.jpeg().map_err(|e| e.to_string())?;
            let info = JpegDecoder::new().and_then(|mut d| d.info(&jpeg)).map_err(|e| e.to_string())?;
            let file = StillFile {
                name: format!("{:013}-{}.jpg", still.captured_ms, still.seq),
                stream: name,
                captured_ms: still.captured_ms,
                width: info.width as u32,
                height: info.height as u32,
                bytes: jpeg.len() as u64,
                stretch,
                stretch_levels: levels,
            };
            store.save(file, &jpeg).map_err(|e| format!("cannot write to {}: {e}", store.dir.display()))
        })
        .await;
        match kept {
            Ok(Ok(())) => last_kept = Some(captured_ms),
            Ok(Err(e)) if errors_logged_at.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) => {
                tracing::warn!(stream = stream.name(), "a still was not kept: {e}");
                errors_logged_at = Some(Instant::now());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scopecast_shared::api::Stretch;

    fn file(ms: u64) -> StillFile {
        StillFile {
            name: format!("{ms:013}-1.jpg"),
            stream: "s".into(),
            captured_ms: ms,
            width: 2,
            height: 2,
            bytes: 100,
            stretch: Stretch::Off,
            stretch_levels: None,
        }
    }

    #[test]
    fn only_names_it_wrote_are_served() {
        assert!(is_still_name("1795000000000-12.jpg"));
        for bad in ["../etc/passwd", "1795-1.json", "a-1.jpg", "1795-.jpg", "-1.jpg", "1795-1.jpg/..", "1795_1.jpg"] {
            assert!(!is_still_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_oldest_go_beyond_the_cap_and_a_reopened_store_keeps_counting() {
        let dir = std::env::temp_dir().join(format!("scopecast-stills-{}", rand::random::<u64>()));
        let store = StillStore::open(&dir, 1000).expect("open");
        let jpeg = vec![0xffu8; 200];
        for ms in 1..=6 {
            store.save(file(ms * 1000), &jpeg).expect("save");
        }
        let (kept, total) = store.list(100);
        assert!(total <= 1000, "{total} bytes on disk");
        assert_eq!(kept.first().map(|f| f.captured_ms), Some(6000), "newest first");
        let oldest = kept.last().map(|f| f.captured_ms).expect("some kept");
        assert!(oldest > 1000, "the oldest went");
        assert!(!dir.join(file(1000).name).exists() && !dir.join(file(1000).name.replace(".jpg", ".json")).exists());
        assert!(store.path_of(&file(6000).name).is_some() && store.path_of(&file(1000).name).is_none());
        let files_on_disk = std::fs::read_dir(&dir).expect("dir").count();
        assert_eq!(files_on_disk, 2 * kept.len(), "each still is a JPEG and a sidecar, nothing else");

        // After a restart, the same stills, and the cap still holds.
        drop(store);
        let again = StillStore::open(&dir, 1000).expect("reopen");
        assert_eq!(again.list(100).0, kept);
        again.save(file(7000), &jpeg).expect("save");
        assert!(again.list(100).1 <= 1000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
