//! Writes to an image whose guest data lives in an external data file (`qcow2.txt`, "External
//! data file"; QEMU's `has_data_file` paths of `block/qcow2-cluster.c` and `qcow2-refcount.c`).
//!
//! - **Where data goes.** A data cluster is always at its guest offset in the data file (QEMU's
//!   `do_alloc_cluster_offset` with a data file): "allocating" one takes no host cluster and
//!   changes no refcount — refcounts count the qcow2 file's clusters only (header, tables). The
//!   L2 entry becomes `guest | COPIED` (for guest cluster 0, offset 0 with COPIED: "all clusters
//!   in external data files always have refcount 1", so COPIED tells it from unallocated).
//! - **Nothing is freed.** An entry that stops pointing at its data cluster (a discard, an
//!   unmapping write-zeroes) frees nothing; the range is discarded in the data file at once,
//!   under the request's serialising range (QEMU's `qcow2_free_any_cluster` with a data file):
//!   later it could punch out data that a new write put at the same place.
//! - **`data_file_raw`** (autoclear bit): the data file alone reads as the guest disk. Data
//!   clusters are at their guest offsets anyway, so only write-zeroes must write its zeros into
//!   the data file as well, before the entries change (QEMU's `qcow2_subcluster_zeroize`); a
//!   read-write open keeps the bit ([`super::state`]). A discard, which makes clusters read as
//!   zeros, zeroes the data file too: QEMU only passes the discard down, which keeps the
//!   identity on a host file (a punched hole reads as zeros) but not on a device that ignores
//!   discards (a guest's virtio disk by default), where the data file would keep the old data.
//! - **Ordering.** Data written to the data file must be stable before an L2 entry points at
//!   it (`docs/ARCHITECTURE.md` rule 2): the metadata cache flushes the data file with the file
//!   before it writes table slices ([`crate::io::cache`]).

use crate::error::{Error, Result};
use crate::io::{child_io, Io};
use crate::node::{NodeId, Role};

use super::header::autoclear;
use super::Qcow2;

impl Qcow2 {
    /// The data-file child of qcow2 node `node` (an image with an external data file).
    pub(crate) fn data_child(io: &Io<'_, '_>, node: NodeId) -> Result<NodeId> {
        io.node(node)?
            .child(Role::DataFile)
            .ok_or(Error::BadGraph("qcow2 node without its data-file child"))
    }

    /// The external data file is kept a raw image of the guest disk (`data_file_raw`).
    pub(crate) fn data_file_raw(&self) -> bool {
        self.data_file && self.header().autoclear & autoclear::DATA_FILE_RAW != 0
    }

    /// Where the data clusters from guest cluster `first` (a byte offset) on go in the data file:
    /// at the same offset. Returns the host offset and whether those bytes read as zeros already
    /// (past the data file's end), as an allocation in the image file tells of fresh clusters.
    pub(crate) fn data_file_clusters(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        first: u64,
    ) -> Result<(u64, bool)> {
        let data = Self::data_child(io, node)?;
        Ok((first, first >= child_io::size(io, data)?))
    }

    /// With `data_file_raw`, writes zeros over guest `[pos, pos + len)` of the data file before a
    /// write-zeroes changes the entries there (QEMU's `qcow2_subcluster_zeroize`).
    pub(crate) async fn zero_raw_data(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        pos: u64,
        len: u64,
    ) -> Result<()> {
        if !self.data_file_raw() || len == 0 {
            return Ok(());
        }
        let data = Self::data_child(io, node)?;
        // Past the data file's end it reads as zeros already (a raw data file that QEMU's
        // preallocation left shorter than the last cluster).
        let end = (pos + len).min(child_io::size(io, data)?);
        if end <= pos {
            return Ok(());
        }
        child_io::write_zeroes(io, data, pos, end - pos).await
    }

    /// A data cluster an entry no longer points at: discarded in the data file now (advisory, as
    /// QEMU's pass-discard-request: a failure changes nothing).
    pub(crate) async fn discard_data(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        host: u64,
        len: u64,
    ) -> Result<()> {
        let data = Self::data_child(io, node)?;
        let end = (host + len).min(child_io::size(io, data)?);
        if end > host {
            let _ = child_io::discard(io, data, host, end - host).await;
        }
        Ok(())
    }
}
