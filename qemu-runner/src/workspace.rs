//! Where things live: the workspace root, the runner's folder under `target/`, per-run directories.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::RunnerError;

/// The workspace root: the parent of this crate's folder, fixed at compile time.
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    root().join("target")
}

/// The runner's own folder: `target/strata/` (default disk, run directories).
pub fn strata_dir() -> PathBuf {
    target_dir().join("strata")
}

/// Set to anything to keep each run's directory (the defmt log) after the run.
pub const KEEP_RUN_ENV: &str = "STRATA_KEEP_RUN";

/// A per-run scratch directory, `target/strata/runs/<pid>-<n>/`, removed on drop unless
/// `STRATA_KEEP_RUN` is set.
#[derive(Debug)]
pub struct RunDir {
    /// The directory.
    path: PathBuf,
    /// Leave it behind on drop.
    keep: bool,
}

impl RunDir {
    /// Creates a fresh run directory.
    pub fn create() -> Result<Self, RunnerError> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let runs = strata_dir().join("runs");
        let keep = std::env::var_os(KEEP_RUN_ENV).is_some();
        if !keep && n == 0 {
            sweep_stale(&runs);
        }
        let path = runs.join(format!("{}-{n}", std::process::id()));
        // A directory left by an earlier process with the same pid is stale.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(|e| RunnerError::io(format!("creating {}", path.display()), e))?;
        Ok(RunDir { path, keep })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True if the directory stays after the run.
    pub fn kept(&self) -> bool {
        self.keep
    }
}

/// Removes run directories left by runner processes that no longer exist (killed before they
/// could clean up).
fn sweep_stale(runs: &Path) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != me && !Path::new("/proc").join(pid.to_string()).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
