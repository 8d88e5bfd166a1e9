//! A node's write threshold (QEMU's `block/write-threshold.c`, not a filter): the first write,
//! write-zeroes or discard that reaches past the threshold at the node records by how much, and
//! the threshold switches itself off, as QEMU's `BLOCK_WRITE_THRESHOLD` event does. Set with the
//! `write-threshold=` option at open or [`crate::Graph::set_write_threshold`]; the record is
//! taken with [`crate::graph::GraphRef::take_write_threshold_events`]. Used on a format's file
//! node, it says when an image's file grows past a size (thin provisioning).

use core::cell::Cell;

/// What the first write past a threshold left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThresholdExceeded {
    /// Bytes the write reached past the threshold.
    pub amount_exceeded: u64,
    /// The threshold it passed.
    pub write_threshold: u64,
}

/// A node's threshold (0: off) and its unread record.
#[derive(Debug, Default)]
pub struct WriteThreshold {
    limit: Cell<u64>,
    exceeded: Cell<Option<ThresholdExceeded>>,
}

impl WriteThreshold {
    /// Arms the threshold at `bytes` (0 switches it off).
    pub fn set(&self, bytes: u64) {
        self.limit.set(bytes);
    }

    /// The armed threshold (0: off).
    pub fn get(&self) -> u64 {
        self.limit.get()
    }

    /// A write of `[offset, offset + len)` reaches the node: past an armed threshold, records
    /// by how much and switches the threshold off.
    pub fn check(&self, offset: u64, len: u64) {
        let limit = self.limit.get();
        let end = offset.saturating_add(len);
        if limit != 0 && end > limit {
            self.exceeded.set(Some(ThresholdExceeded { amount_exceeded: end - limit, write_threshold: limit }));
            self.limit.set(0);
        }
    }

    /// Takes the record, if a write passed the threshold since the last call.
    pub fn take(&self) -> Option<ThresholdExceeded> {
        self.exceeded.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_then_switches_off() {
        let t = WriteThreshold::default();
        t.check(0, 1 << 30);
        assert_eq!(t.take(), None, "off until set");
        t.set(1 << 20);
        t.check(0, 1 << 20);
        assert_eq!(t.take(), None, "ending at the threshold does not pass it");
        t.check((1 << 20) - 512, 4096);
        assert_eq!(t.take(), Some(ThresholdExceeded { amount_exceeded: 4096 - 512, write_threshold: 1 << 20 }));
        assert_eq!(t.get(), 0);
        t.check(8 << 20, 4096);
        assert_eq!(t.take(), None, "once");
    }
}
