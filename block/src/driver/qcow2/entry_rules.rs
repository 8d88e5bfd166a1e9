//! Rules of `qcow2.txt` about one L2 entry, checked each time the entry is used (read, write,
//! zeroing), never by a scan of the tables at open: an image of any size opens on a small cache.
//! Each broken rule is an [`Error::Corrupt`] naming it, at the entry's file offset. The rule
//! table with QEMU's behaviour and the test of each row is `docs/qcow2-rules.md`.
//!
//! What one entry cannot tell (two data clusters on one host cluster, a data cluster on another
//! L2 table or on a refcount block, COPIED flags that disagree with the refcounts) only a full
//! check that counts every reference can find.

use crate::error::{Error, Result};

use super::entry_bits::{COPIED, ZERO};
use super::validation::Region;
use super::Qcow2;

/// A compressed entry's own rules: bit 63 clear ("0 for clusters that are unused, compressed or
/// require COW"); with extended L2 entries its bitmap is reserved (zero).
pub fn compressed(entry: u64, bitmap: u64, q: &Qcow2, at: u64) -> Result<()> {
    let corrupt = |what| Err(Error::Corrupt { what, offset: at });
    if entry & COPIED != 0 {
        return corrupt("L2 entry: compressed cluster with the COPIED flag set");
    }
    if q.extended_l2 && bitmap != 0 {
        return corrupt("subcluster bitmap: nonzero for a compressed cluster");
    }
    Ok(())
}

/// Bit 0 of a standard entry (the zero flag) "with version 2 or with extended L2 entries ... is
/// always 0".
#[inline(always)]
pub fn zero_flag(entry: u64, q: &Qcow2, at: u64) -> Result<()> {
    if entry & ZERO == 0 {
        return Ok(());
    }
    let corrupt = |what| Err(Error::Corrupt { what, offset: at });
    if q.header.version < 3 {
        return corrupt("L2 entry: zero flag in a version 2 image");
    }
    if q.extended_l2 {
        return corrupt("L2 entry: zero flag set with extended L2 entries");
    }
    Ok(())
}

/// A standard entry without a host offset: "The offset may only be 0 with bit 63 set ... when an
/// external data file is used."
pub fn no_host(entry: u64, q: &Qcow2, at: u64) -> Result<()> {
    if entry & COPIED != 0 && !q.data_file {
        return Err(Error::Corrupt { what: "L2 entry: COPIED flag without a host cluster", offset: at });
    }
    Ok(())
}

/// The host cluster of a data or preallocated zero cluster in the image file: not the header, a
/// table Strata knows the place of, or the L2 table the entry is in (an L2 table is one aligned
/// cluster, so it starts at the entry's offset rounded down). Data-file offsets are not checked:
/// the data file holds no metadata.
#[inline(always)]
pub fn host_cluster(host: u64, q: &Qcow2, at: u64) -> Result<()> {
    if q.data_file {
        return Ok(());
    }
    let cs = q.cluster_size();
    if q.meta.hit(&Region::new(host, cs)).is_some() {
        return Err(Error::Corrupt { what: "L2 entry: data cluster overlaps the header or a table", offset: at });
    }
    if host == at & !(cs - 1) {
        return Err(Error::Corrupt { what: "L2 entry: data cluster is the L2 table holding the entry", offset: at });
    }
    Ok(())
}

/// The sectors a compressed descriptor names (from `host`, `csize` bytes) must reach the file:
/// only the last one may run past its end (QEMU writes the last compressed cluster that way; the
/// descriptor rounds up to whole sectors). `eof` is the file's size.
pub fn compressed_extent(host: u64, csize: u64, eof: u64, at: u64) -> Result<()> {
    if host >= eof {
        return Err(Error::Corrupt { what: "L2 entry: compressed cluster starts past the end of the file", offset: at });
    }
    // host + csize is the end of the last sector (host is below 2^56: no overflow).
    if (host + csize).saturating_sub(512) >= eof {
        return Err(Error::Corrupt { what: "L2 entry: compressed cluster's sectors run past the end of the file", offset: at });
    }
    Ok(())
}
