//! `--drive ...,log=PATH`: QEMU's `blklogwrites` filter between a drive's virtio-blk device and
//! its file, logging every write, write-zeroes, discard and flush to PATH.
//!
//! The guest still sees the file's raw bytes (a qcow2 image is opened by the guest, as without
//! a log). The log is dm-log-writes' format with 512-byte log sectors; `img::logwrites` reads
//! it. The options used (`file`, `log`, `log-sector-size`) exist from QEMU 3.0 through 10.x; the
//! log is written from its start (no `log-append`), so the runner empties it before the boot —
//! stale entries past the new end would otherwise read as part of this run.

use std::path::{Path, PathBuf};

use crate::drives::{Backing, Drive};
use crate::img::output;
use crate::RunnerError;

/// The log sector size asked of QEMU: entries and write offsets count in these.
pub const LOG_SECTOR_SIZE: u32 = 512;

/// Creates or empties the write log of every drive in `drives` (the drives to attach, chain
/// files included) before QEMU opens them; a log that is the same file as any drive's (under
/// any name) is refused before anything is emptied.
pub fn prepare_all(drives: &[Drive]) -> Result<(), RunnerError> {
    let files: Vec<PathBuf> = drives.iter().filter(|d| d.backing == Backing::File).map(|d| d.file.clone()).collect();
    let logs: Vec<&Path> = drives.iter().filter_map(|d| d.log.as_deref()).collect();
    for log in &logs {
        output::refuse_inputs(log, &files).map_err(|e| RunnerError::Usage(format!("log={}: {e}", log.display())))?;
    }
    for log in logs {
        std::fs::File::create(log).map_err(|e| RunnerError::io(format!("creating the write log {}", log.display()), e))?;
    }
    Ok(())
}

/// The `-blockdev` values for drive node `node` over `file` (protocol driver `protocol`) logged
/// to `log`: the file, the log file, and the filter named `node` the device attaches to.
/// (A logged drive is writable: [`crate::drives::validate`] refuses `read-only=on` with it.)
pub fn blockdevs(node: &str, protocol: &str, file: &str, log: &str) -> [String; 3] {
    [
        format!("driver={protocol},node-name={node}-file,filename={file}"),
        format!("driver=file,node-name={node}-log,filename={log}"),
        format!("driver=blklogwrites,node-name={node},file={node}-file,log={node}-log,log-sector-size={LOG_SECTOR_SIZE}"),
    ]
}
