//! Types every architecture's boot surface shares, so the kernel sees one shape whatever the CPU:
//! the clock's calibration, the memory map, why boot information was unusable, and the
//! virtio-mmio register windows a board offers.

use core::fmt;

/// The clock's frequency and whether it was measured or assumed.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    /// Clock ticks per second.
    pub hz: u64,
    /// False when nothing could measure the clock and `hz` is a guess.
    pub calibrated: bool,
}

/// One region of the boot memory map.
#[derive(Clone, Copy, Debug)]
pub struct MemoryRegion {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// True for RAM the kernel may use; false for reserved and device ranges.
    pub ram: bool,
}

/// Why the loader's boot information could not be used (the kernel says so and stops).
#[derive(Clone, Copy, Debug)]
pub struct BootError {
    /// What was wrong.
    pub what: &'static str,
    /// The value found instead (an address, a magic number).
    pub found: u64,
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (found {:#x})", self.what, self.found)
    }
}

/// Most virtio-mmio windows a board description holds (aarch64 `virt` has 32, microvm 24).
pub const MAX_MMIO_WINDOWS: usize = 32;

/// The virtio-mmio register windows of a board, from a fixed table or the device tree.
#[derive(Clone, Copy, Debug)]
pub struct MmioWindows {
    windows: [(u64, u64); MAX_MMIO_WINDOWS],
    len: usize,
}

impl MmioWindows {
    /// No windows.
    pub const fn new() -> Self {
        Self {
            windows: [(0, 0); MAX_MMIO_WINDOWS],
            len: 0,
        }
    }

    /// Adds a window of `size` bytes at `base`; false (and nothing added) when full.
    pub fn push(&mut self, base: u64, size: u64) -> bool {
        match self.windows.get_mut(self.len) {
            Some(slot) => {
                *slot = (base, size);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The windows as `(base, size)`, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.windows[..self.len].iter().copied()
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for MmioWindows {
    fn default() -> Self {
        Self::new()
    }
}

/// A candidate channel for trace output, for the `logbench` workload to time.
#[derive(Clone, Copy)]
pub struct TraceChannel {
    /// Its name in reports.
    pub name: &'static str,
    /// Prepares the channel (programs a UART); called once before timing.
    pub setup: fn(),
    /// Writes bytes through it.
    pub write: fn(&[u8]),
}

/// Writes `s` through `out` with each `\n` as `\r\n`, as a serial terminal wants (the consoles
/// of every architecture).
#[cfg_attr(not(target_os = "none"), allow(dead_code))] // reason: only the bare-metal consoles call it; tested on the host
pub(crate) fn write_crlf(s: &str, mut out: impl FnMut(&[u8])) {
    for chunk in s.split_inclusive('\n') {
        match chunk.strip_suffix('\n') {
            Some(line) => {
                out(line.as_bytes());
                out(b"\r\n");
            }
            None => out(chunk.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn write_crlf_turns_each_newline_into_cr_lf() {
        let mut out = Vec::new();
        super::write_crlf("a\nbc\n\nd", |b| out.extend_from_slice(b));
        assert_eq!(out, b"a\r\nbc\r\n\r\nd");
    }
}
