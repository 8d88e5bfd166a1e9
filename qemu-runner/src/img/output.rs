//! Files a command writes as a whole (`convert`'s and `create`'s outputs, `replay`'s copy): never
//! one of the command's inputs, locked as QEMU locks images before anything is changed, and
//! created or truncated only once both are known.
//!
//! `qemu-img` gets the same safety from its image locks: it opens the output without `O_TRUNC`,
//! takes the write lock, and only then truncates. An output that is the input's own file fails
//! the lock there; Strata checks identities first so the message says what happened.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use strata_block::dev::file::lock::{self, LockError};
use strata_block::dev::file::FileError;

use super::ImgError;

/// The (device, inode) pair naming the file at `path`, if it exists.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Fails if `output` exists and is the same file as one of `inputs` (the images a command reads:
/// the top image and every backing and data file of its chain), whatever names they go by.
pub fn refuse_inputs(output: &Path, inputs: &[PathBuf]) -> Result<(), ImgError> {
    let Some(out) = identity(output) else { return Ok(()) };
    match inputs.iter().find(|input| identity(input) == Some(out)) {
        Some(input) => Err(ImgError::failed(format!(
            "'{}' is the same file as '{}', which this command reads; refusing to write over it",
            output.display(),
            input.display()
        ))),
        None => Ok(()),
    }
}

/// QEMU's write lock on an open file, held until this guard drops: see [`lock_for_writing`].
#[must_use = "the lock is released when the guard drops"]
pub struct WriteLock<'a>(&'a File);

impl Drop for WriteLock<'_> {
    /// Releases the lock bytes explicitly rather than leaving it to the close: a child process
    /// forked meanwhile by another thread (the tests run `img` and boots in parallel threads of
    /// one process) shares the open file description until it execs, and would hold the lock
    /// past the close, failing the next open of the same file.
    fn drop(&mut self) {
        lock::release(self.0.as_raw_fd());
    }
}

/// Takes QEMU's lock bytes on `file` (at `path`) for writing and resizing, as a writable open
/// does; they last until the returned guard drops. File systems without OFD locks are let
/// through, as QEMU's `locking=auto` does.
pub fn lock_for_writing<'a>(file: &'a File, path: &Path) -> Result<WriteLock<'a>, String> {
    match lock::apply(file.as_raw_fd(), lock::WRITER_PERM, lock::DEFAULT_SHARED) {
        Ok(()) | Err(LockError::Unsupported(_)) => Ok(WriteLock(file)),
        Err(LockError::Conflict { perm, shared }) => {
            Err(FileError::Locked { path: path.to_path_buf(), perm, shared }.to_string())
        }
        Err(LockError::Os(e)) => Err(format!(
            "Could not lock '{}': {}",
            path.display(),
            std::io::Error::from_raw_os_error(e)
        )),
    }
}

/// Makes `output` an empty sparse file of `size` bytes for a command reading `inputs`: refused if
/// it is one of them or another process holds it (it is then left as it was); created if
/// missing; truncated only while its write lock is held. The lock ends when this returns, and the
/// caller opens the file again (taking the lock anew).
pub fn create_output(output: &Path, size: u64, inputs: &[PathBuf]) -> Result<(), ImgError> {
    refuse_inputs(output, inputs)?;
    // Readable too: the shared lock bytes are read locks.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(output)
        .map_err(|e| ImgError::failed(format!("Could not create '{}': {e}", output.display())))?;
    let _lock = lock_for_writing(&file, output).map_err(ImgError::failed)?;
    // Checked again through the open file: `output` may have been renamed into place meanwhile.
    let opened = file.metadata().ok().map(|m| (m.dev(), m.ino()));
    if inputs.iter().any(|input| identity(input) == opened) {
        return Err(ImgError::failed(format!(
            "'{}' became one of this command's inputs; refusing to write over it",
            output.display()
        )));
    }
    let resize = |len| {
        file.set_len(len)
            .map_err(|e| ImgError::failed(format!("Could not resize '{}': {e}", output.display())))
    };
    resize(0)?;
    resize(size)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("strata-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn an_input_is_never_an_output_under_any_name() {
        let d = dir("same");
        let input = d.join("in.img");
        std::fs::write(&input, [0x5a; 4096]).unwrap();
        std::fs::hard_link(&input, d.join("link.img")).unwrap();
        std::os::unix::fs::symlink(&input, d.join("sym.img")).unwrap();
        for name in ["in.img", "link.img", "sym.img", "./in.img"] {
            let out = d.join(name);
            assert!(create_output(&out, 0, std::slice::from_ref(&input)).is_err(), "{name}");
        }
        assert_eq!(std::fs::read(&input).unwrap(), vec![0x5a; 4096], "the input is untouched");
        create_output(&d.join("new.img"), 1 << 20, &[input]).unwrap();
        assert_eq!(std::fs::metadata(d.join("new.img")).unwrap().len(), 1 << 20);
    }

    #[test]
    fn a_locked_output_is_left_as_it_was() {
        let d = dir("locked");
        let out = d.join("held.img");
        std::fs::write(&out, [7u8; 512]).unwrap();
        // Another open file description holding the write lock, as a QEMU process would.
        let holder = OpenOptions::new().read(true).write(true).open(&out).unwrap();
        let held = lock_for_writing(&holder, &out).unwrap();
        let err = create_output(&out, 0, &[]).unwrap_err().to_string();
        assert!(err.contains("lock"), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), vec![7u8; 512]);
        drop(held);
        drop(holder);
        create_output(&out, 0, &[]).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 0);
    }

    #[test]
    fn the_lock_ends_with_the_guard_even_while_a_forked_child_shares_the_file() {
        let d = dir("shared");
        let out = d.join("out.img");
        // A duplicate descriptor shares the open file description, as a child forked by
        // another thread does until it execs: closing our descriptor alone would leave the
        // lock held through the duplicate.
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&out).unwrap();
        let child_copy = file.try_clone().unwrap();
        let lock = lock_for_writing(&file, &out).unwrap();
        let other = OpenOptions::new().read(true).write(true).open(&out).unwrap();
        assert!(lock_for_writing(&other, &out).is_err(), "held while the guard lives");
        drop(lock);
        drop(file);
        assert!(lock_for_writing(&other, &out).is_ok(), "released with the guard");
        drop(child_copy);
    }
}
