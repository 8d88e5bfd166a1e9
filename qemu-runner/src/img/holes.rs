//! The host files under an open image, and where they have holes (`SEEK_DATA`/`SEEK_HOLE`): what
//! QEMU's file driver adds to block status. A hole reads as zeros, so `img map` reports it as
//! such and `img convert` leaves it out.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use strata_block::dev::BlockDevice;

use super::image::Image;

/// Host files of an image, for hole queries (each opened once, on first use).
pub struct HostFiles<'i, 'g, 'd> {
    img: &'i Image<'g, 'd>,
    open: HashMap<PathBuf, File>,
}

impl<'i, 'g, 'd> HostFiles<'i, 'g, 'd> {
    /// No file opened yet.
    pub fn new(img: &'i Image<'g, 'd>) -> Self {
        Self { img, open: HashMap::new() }
    }

    /// The path of the host file that is leaf device `dev`, if it is one of the image's.
    pub fn path(&self, dev: &dyn BlockDevice) -> Option<PathBuf> {
        self.img
            .leaves
            .iter()
            .position(|l| std::ptr::addr_eq(*l as *const dyn BlockDevice, dev as *const dyn BlockDevice))
            .and_then(|i| self.img.paths.get(i).cloned())
    }

    /// What QEMU calls the host file that is leaf device `dev` (see [`Image::names`]).
    pub fn name(&self, dev: &dyn BlockDevice) -> Option<String> {
        self.img
            .leaves
            .iter()
            .position(|l| std::ptr::addr_eq(*l as *const dyn BlockDevice, dev as *const dyn BlockDevice))
            .and_then(|i| self.img.names.get(i).cloned())
    }

    /// Whether `offset` of `path` is in a hole, and for how many bytes (at most `len`, at least
    /// 1) that stays so. Unknown answers count as data.
    pub fn hole(&mut self, path: &Path, offset: u64, len: u64) -> (bool, u64) {
        if !self.open.contains_key(path) {
            match File::open(path) {
                Ok(f) => {
                    self.open.insert(path.to_path_buf(), f);
                }
                Err(_) => return (false, len),
            }
        }
        let Some(f) = self.open.get(path) else { return (false, len) };
        let fd = f.as_raw_fd();
        let Ok(off) = libc::off_t::try_from(offset) else { return (false, len) };
        // SAFETY: lseek on a file descriptor we own; no memory is involved.
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            // ENXIO: no data at or after `offset` (past the end too).
            let enxio = std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
            return (enxio, len);
        }
        let data = data as u64;
        if data > offset {
            return (true, (data - offset).min(len));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, off, libc::SEEK_HOLE) };
        if hole < 0 {
            return (false, len);
        }
        (false, (hole as u64).saturating_sub(offset).clamp(1, len))
    }
}
