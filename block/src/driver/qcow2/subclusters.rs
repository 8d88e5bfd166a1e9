//! Extended L2 entries (`qcow2.txt`, "Extended L2 Entries"): 32 subclusters per cluster, each
//! allocated, reading as zeros, or unallocated (read from the backing file) according to the
//! entry's 64-bit bitmap. Contradictory bitmaps are [`Error::Corrupt`], as QEMU's
//! `QCOW2_SUBCLUSTER_INVALID`.

use crate::error::{Error, Result};

/// Subclusters per cluster.
pub const PER_CLUSTER: u32 = 32;

/// What one subcluster (or, without subclusters, one cluster) reads as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sub {
    /// Data in the host cluster.
    Data,
    /// Zeros.
    Zero,
    /// Not here: the backing file, or zeros.
    Unallocated,
}

/// The bitmap of an entry that has a host cluster: no subcluster may be both allocated and zero.
pub fn check_allocated(bitmap: u64, entry_at: u64) -> Result<()> {
    if (bitmap >> 32) & bitmap & 0xffff_ffff != 0 {
        return Err(Error::Corrupt { what: "subcluster bitmap: a subcluster both allocated and reading as zeros", offset: entry_at });
    }
    Ok(())
}

/// The bitmap of an entry without a host cluster: nothing may be allocated.
pub fn check_unallocated(bitmap: u64, entry_at: u64) -> Result<()> {
    if bitmap & 0xffff_ffff != 0 {
        return Err(Error::Corrupt { what: "subcluster bitmap: allocated subclusters without a host cluster", offset: entry_at });
    }
    Ok(())
}

/// Subcluster `index` of a cluster with (`host`: true) or without a host cluster.
pub fn kind(bitmap: u64, index: u32, host: bool) -> Sub {
    let zero = bitmap & (1u64 << (index + 32)) != 0;
    let alloc = bitmap & (1u64 << index) != 0;
    if zero {
        Sub::Zero
    } else if alloc && host {
        Sub::Data
    } else {
        Sub::Unallocated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps() {
        let b = (1u64 << 33) | 1;
        assert_eq!(kind(b, 0, true), Sub::Data);
        assert_eq!(kind(b, 1, true), Sub::Zero);
        assert_eq!(kind(b, 2, true), Sub::Unallocated);
        assert!(check_allocated(b, 0).is_ok());
        assert!(check_allocated((1u64 << 32) | 1, 0).is_err());
        assert!(check_unallocated(1 << 40, 0).is_ok());
        assert!(check_unallocated(1 << 4, 0).is_err());
    }
}
