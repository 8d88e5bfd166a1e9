//! Creating an internal snapshot (QEMU's `qcow2_snapshot_create`): the active L1 table copied
//! into new clusters, one more reference on every L2 table and cluster it reaches (the active
//! tables' COPIED bits cleared where counts pass one), then a new snapshot table with the new
//! entry switched in by the header.
//!
//! Order: everything written back first; the L1 copy written; the refcount increases and flag
//! changes made stable (refcounts before tables, by the write-back); the new table written and
//! switched in. A power cut before the switch leaves the image without the snapshot and at
//! most leaks (except in the window QEMU has too, between the refcount and the table write-back,
//! where a still-set COPIED bit meets a count of two); after it, with the snapshot.

use crate::error::{Error, Result};
use crate::io::{child_io, Io};
use crate::node::NodeId;

use super::super::tables::COPIED;
use super::super::Qcow2;
use super::refcount_walk::begin_op;
use super::table_write::{EncodedEntry, EntryFields};
use super::{SnapshotInfo, MAX_KEPT_NAME};

/// A snapshot to create.
#[derive(Clone, Copy, Debug)]
pub struct NewSnapshot<'a> {
    /// Its id; `None` picks the next free numeric one as QEMU does (one above the largest id
    /// read as a number).
    pub id: Option<&'a str>,
    /// Its name (QEMU allows names to repeat; ids are unique).
    pub name: &'a str,
    /// Wall-clock time taken, seconds since the epoch.
    pub date_sec: u32,
    /// Nanoseconds part.
    pub date_nsec: u32,
    /// Guest run time in nanoseconds.
    pub vm_clock_nsec: u64,
    /// Instructions counted (record/replay); `u64::MAX` for none (QEMU's `savevm`). `qemu-img
    /// snapshot -c` writes 0.
    pub icount: u64,
}

/// The number QEMU reads from an id (`strtoul`: leading digits; 0 if none).
fn id_number(id: &str) -> u64 {
    id.trim_start()
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0u64, |n, d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        })
}

impl Qcow2 {
    /// Creates snapshot `new` of qcow2 node `node` (read-write, drained by the caller: no
    /// request in flight). Returns the entry as it is listed.
    pub async fn snapshot_create(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        new: &NewSnapshot<'_>,
    ) -> Result<SnapshotInfo> {
        let (file, _lock) = begin_op(self, io, node).await?;
        // The id: unique, given or the next free number.
        let (_, count) = self.snap_table.get();
        if count >= super::super::validation::MAX_SNAPSHOTS {
            return Err(Error::NoSpace {
                what: "snapshot table (QEMU's limit of 65536 snapshots)",
            });
        }
        let mut walk = self.snapshots();
        let mut max_id = 0u64;
        while let Some(s) = walk.next(io, file).await? {
            if let Some(id) = new.id {
                if usize::from(s.id_len) == id.len() && s.id == id {
                    return Err(Error::BadName {
                        what: "a snapshot with this id already exists",
                    });
                }
            }
            max_id = max_id.max(id_number(&s.id));
        }
        let mut id_buf = heapless::String::<MAX_KEPT_NAME>::new();
        let id = match new.id {
            Some(id) => id,
            None => {
                core::fmt::write(&mut id_buf, format_args!("{}", max_id.saturating_add(1)))
                    .map_err(|_| Error::BadName {
                        what: "snapshot id",
                    })?;
                id_buf.as_str()
            }
        };
        let l1 = self.l1.get();
        let entries = self.l1_entries.get();
        let fields = EntryFields {
            l1_table_offset: 0,
            l1_size: entries,
            id,
            name: new.name,
            date_sec: new.date_sec,
            date_nsec: new.date_nsec,
            vm_clock_nsec: new.vm_clock_nsec,
            disk_size: self.size(),
            icount: new.icount,
        };
        // Checks the names before anything is allocated.
        EncodedEntry::new(&fields)?;
        // The L1 copy (COPIED cleared: every table it names is shared from now on).
        let bytes = u64::from(entries) * 8;
        let copy = if bytes == 0 {
            0
        } else {
            let (at, _) = self
                .alloc_clusters(io, node, file, bytes.div_ceil(self.cluster_size()), true)
                .await?;
            self.copy_l1(io, file, l1.start, at, entries, entries)
                .await?;
            at
        };
        self.update_tree_refcounts(io, file, l1.start, entries, 1, true)
            .await?;
        let entry = EncodedEntry::new(&EntryFields {
            l1_table_offset: copy,
            ..fields
        })?;
        self.rewrite_snapshot_table(io, node, file, None, Some(&entry), count + 1)
            .await?;
        // Frees the old table made wait, and their refcounts written.
        self.flush_caches(io, node).await?;
        self.flush_caches(io, node).await?;
        let mut walk = self.snapshots();
        let mut last = None;
        while let Some(s) = walk.next(io, file).await? {
            last = Some(s);
        }
        last.ok_or(Error::BadGraph(
            "snapshot table without the entry just written",
        ))
    }

    /// Writes `to_entries` L1 entries at `to`: the first `from_entries` of the table at `from`
    /// (read through the cache, COPIED cleared), zeros after them.
    pub(crate) async fn copy_l1(
        &self,
        io: &Io<'_, '_>,
        file: NodeId,
        from: u64,
        to: u64,
        from_entries: u32,
        to_entries: u32,
    ) -> Result<()> {
        let mut bounce = io.bounce.take_for_copy(1).await?;
        let buf = bounce.get(0).ok_or(Error::NoSpace {
            what: "bounce buffers",
        })?;
        let per = (buf.len() / 8) as u64;
        if per == 0 {
            return Err(Error::NoSpace {
                what: "bounce buffers smaller than an L1 entry",
            });
        }
        let slice_len = self.slice_len();
        let total = u64::from(to_entries);
        let mut i = 0u64;
        while i < total {
            let n = (total - i).min(per);
            for k in 0..n {
                let e = if i + k < u64::from(from_entries) {
                    io.meta
                        .read_u64(io, file, from + (i + k) * 8, slice_len)
                        .await?
                        & !COPIED
                } else {
                    0
                };
                let at = (k * 8) as usize;
                if let Some(d) = buf.get_mut(at..at + 8) {
                    d.copy_from_slice(&e.to_be_bytes());
                }
            }
            let piece = buf.get(..(n * 8) as usize).ok_or(Error::NoSpace {
                what: "bounce buffers",
            })?;
            child_io::write(io, file, to + i * 8, piece).await?;
            i += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::id_number;

    #[test]
    fn ids_read_as_qemu_reads_them() {
        assert_eq!(id_number("12"), 12);
        assert_eq!(id_number(" 7x"), 7);
        assert_eq!(id_number("vm"), 0);
        assert_eq!(id_number(""), 0);
        assert_eq!(id_number("99999999999999999999999"), u64::MAX);
    }
}
