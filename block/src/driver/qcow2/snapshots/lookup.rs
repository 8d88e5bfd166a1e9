//! Finding the snapshot an operation names, as QEMU does: `qemu-img snapshot -a` (and
//! `snapshot.name=` opens) take an id first and a name failing that
//! (`find_snapshot_by_id_or_name`); `-d` looks at names only (`bdrv_snapshot_find`). The
//! entry's bytes in the table come with it, for a delete.

use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::NodeId;

use super::super::validation::Region;
use super::super::Qcow2;
use super::SnapshotInfo;

/// How a key names a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The id only.
    Id,
    /// The name only (the first entry of that name).
    Name,
    /// The id, or failing that the name.
    IdOrName,
}

fn is(full_len: u16, kept: &str, key: &str) -> bool {
    usize::from(full_len) == key.len() && kept == key
}

impl Qcow2 {
    /// The snapshot `key` names, with the bytes of its table entry (padding included).
    pub(crate) async fn locate_snapshot(
        &self,
        io: &Io<'_, '_>,
        file: NodeId,
        key: &str,
        lookup: Lookup,
    ) -> Result<(SnapshotInfo, Region)> {
        if lookup == Lookup::IdOrName {
            return match self.locate_one(io, file, key, true).await {
                Err(Error::NotFound) => self.locate_one(io, file, key, false).await,
                other => other,
            };
        }
        self.locate_one(io, file, key, lookup == Lookup::Id).await
    }

    async fn locate_one(
        &self,
        io: &Io<'_, '_>,
        file: NodeId,
        key: &str,
        by_id: bool,
    ) -> Result<(SnapshotInfo, Region)> {
        let mut walk = self.snapshots();
        loop {
            let start = walk.pos;
            let Some(s) = walk.next(io, file).await? else {
                return Err(Error::NotFound);
            };
            let hit = if by_id {
                is(s.id_len, &s.id, key)
            } else {
                is(s.name_len, &s.name, key)
            };
            if hit {
                return Ok((s, Region::new(start, walk.pos - start)));
            }
        }
    }
}
