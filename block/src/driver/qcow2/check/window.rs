//! The recomputed refcounts of one window of host clusters, in caller-given memory.
//!
//! Entries have the image's own refcount width (1 to 64 bits, packed as in a refcount block),
//! so the counts saturate exactly where QEMU's in-memory table does (`refcount_max`): a
//! `--budget` of B bytes holds `B * 8 / refcount_bits` clusters per pass.

use super::super::refcount::{entry, set_entry};

/// Counts for clusters `start..start + len`.
pub(crate) struct Window<'b> {
    pub(crate) start: u64,
    pub(crate) len: u64,
    order: u32,
    bytes: &'b mut [u8],
}

impl<'b> Window<'b> {
    /// Clusters a window in `bytes` can hold with entries of `1 << order` bits.
    pub(crate) fn capacity(bytes: usize, order: u32) -> u64 {
        (bytes as u64 * 8) >> order
    }

    /// A window of zero counts for clusters `start..start + len` (`len` at most
    /// [`Window::capacity`]).
    pub(crate) fn new(bytes: &'b mut [u8], order: u32, start: u64, len: u64) -> Self {
        let used = ((len << order).div_ceil(8) as usize).min(bytes.len());
        bytes[..used].fill(0);
        Self {
            start,
            len,
            order,
            bytes: &mut bytes[..used],
        }
    }

    /// The counts as a refcount block stores them (the window's part of one).
    pub(crate) fn bytes(&self) -> &[u8] {
        self.bytes
    }

    /// One past the last cluster of the window.
    pub(crate) fn end(&self) -> u64 {
        self.start + self.len
    }

    /// True if cluster `k` lies in the window.
    pub(crate) fn holds(&self, k: u64) -> bool {
        k >= self.start && k < self.end()
    }

    /// The count of cluster `k` (0 outside the window).
    pub(crate) fn get(&self, k: u64) -> u64 {
        if !self.holds(k) {
            return 0;
        }
        entry(self.bytes, self.order, k - self.start).unwrap_or(0)
    }

    /// Sets the count of cluster `k` (ignored outside the window or above the width).
    pub(crate) fn set(&mut self, k: u64, v: u64) {
        if self.holds(k) {
            let _ = set_entry(self.bytes, self.order, k - self.start, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn counts_stay_in_their_window() {
        for order in 0..=6u32 {
            let mut mem = [0xffu8; 64];
            let cap = Window::capacity(mem.len(), order);
            let mut w = Window::new(&mut mem, order, 100, cap);
            assert_eq!(w.get(100), 0);
            w.set(100, 1);
            w.set(100 + cap - 1, 1);
            w.set(99, 1);
            w.set(100 + cap, 1);
            assert_eq!(
                (
                    w.get(100),
                    w.get(100 + cap - 1),
                    w.get(99),
                    w.get(100 + cap)
                ),
                (1, 1, 0, 0)
            );
        }
    }
}
