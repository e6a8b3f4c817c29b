//! The pipeline lock: one pipeline (a `forge run`, or a `forge watch` that
//! decided to train) at a time per state folder.
//!
//! The lock is an advisory file lock (`flock`-style, [`std::fs::File::try_lock`]) on
//! `.forge/pipeline.lock`, which the holder fills with its pid and start time. The
//! kernel drops the lock when its holder exits, even by a crash or `SIGKILL`, so a
//! lock can never outlive its process; a file left behind with a pid that no
//! longer runs is reported as a stale lock and taken over. A second taker — in
//! another process or the same one — gets [`Error::Locked`] naming the holder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::util::{unix_now, utc_timestamp};
use crate::{Error, Result};

/// A held pipeline lock; dropping it releases the lock and empties the file.
#[derive(Debug)]
pub struct PipelineLock {
    file: File,
    path: PathBuf,
    /// The pid that the file named when the lock was taken, if that process was gone.
    pub stale_pid: Option<u32>,
}

/// Whether process `pid` runs (Linux: `/proc/<pid>`; elsewhere assumed alive).
pub fn pid_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

fn parse_holder(text: &str) -> Option<(u32, String)> {
    let mut pid = None;
    let mut since = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("pid=") {
            pid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("since=") {
            since = v.trim().to_string();
        }
    }
    pid.map(|p| (p, since))
}

impl PipelineLock {
    /// Takes the lock at `path` without waiting.
    pub fn acquire(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let (pid, since) = parse_holder(&text).unwrap_or((0, "unknown".into()));
                return Err(Error::Locked { path, pid, since });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| Error::io(&path, e))?;
        let stale_pid = parse_holder(&text)
            .map(|(pid, _)| pid)
            .filter(|&pid| pid != std::process::id());
        if let Some(pid) = stale_pid {
            let alive = pid_alive(pid);
            tracing::warn!(
                lock = %path.display(),
                pid,
                alive,
                "taking over a stale pipeline lock (its holder exited without releasing the file)"
            );
        }
        let body = format!(
            "pid={}\nsince={}\n",
            std::process::id(),
            utc_timestamp(unix_now())
        );
        (|| {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(body.as_bytes())?;
            file.sync_data()
        })()
        .map_err(|e| Error::io(&path, e))?;
        Ok(Self {
            file,
            path,
            stale_pid,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PipelineLock {
    fn drop(&mut self) {
        // Empty the file first so a later reader never sees our pid as a holder.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_lines_parse() {
        assert_eq!(
            parse_holder("pid=12\nsince=2026-01-01T00:00:00Z\n"),
            Some((12, "2026-01-01T00:00:00Z".into()))
        );
        assert_eq!(parse_holder(""), None);
    }
}
