//! Changing a qcow2 image's version (QEMU's `qcow2_upgrade` and `qcow2_downgrade`,
//! `block/qcow2.c`), on the image file alone (no qcow2 node open).
//!
//! **Upgrade** (compat=0.10 to 1.1): the header is rewritten as version 3 — no feature bits,
//! 16-bit refcounts, the feature-name table added. QEMU first rewrites a snapshot table whose
//! entries lack the 16 bytes of extra data version 3 needs; Strata refuses such a table
//! (images QEMU writes since 1.7 have the extra data).
//!
//! **Downgrade** (1.1 to 0.10) refuses, with QEMU's messages and in its order, what version 2
//! cannot express: another refcount width than 16 bits, an external data file, snapshots of
//! another virtual size (or a VM state past 4 GiB), incompatible features but the compression
//! type (extended L2 entries: "incompatible features 0x10"), and zstd compression with
//! compressed clusters in the active layer. Strata also refuses a bitmaps extension (QEMU keeps
//! it in the version 2 header, as inconsistent bitmaps whose clusters then leak). Then the zero
//! clusters are expanded ([`super::zero_expand`]), flushed, and the header rewritten as
//! version 2 in one write: feature bits, refcount order and the feature-name table are gone. A
//! dirty image is repaired first (QEMU: `qcow2_mark_clean`). Every refusal comes before any
//! write.

use crate::error::{Error, Result};
use crate::io::{child_io, flush, Io};
use crate::node::NodeId;

use super::super::check::layout::{be64, Layout};
use super::super::check::stored::Stored;
use super::super::check::{repair_if_dirty, SCRATCH};
use super::super::entry_bits::{COMPRESSED, L1_OFFSET};
use super::super::extensions;
use super::super::header::{incompat, Header};
use super::super::snapshots::Walk;
use super::header_rewrite::{rewrite, V3Fields};
use super::zero_expand;

/// Why a version change was refused (nothing written); `Display` is QEMU's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// "compat=0.10 requires refcount_bits=16".
    RefcountWidth,
    /// "Cannot downgrade an image with a data file".
    DataFile,
    /// "Internal snapshots prevent downgrade of image".
    Snapshots,
    /// "Cannot downgrade an image with incompatible features 0x.. set".
    Incompatible(u64),
    /// "Cannot downgrade an image with zstd compression type and existing compressed clusters".
    ZstdClusters,
    /// Strata's: the image has bitmaps.
    Bitmaps,
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refusal::RefcountWidth => f.write_str("compat=0.10 requires refcount_bits=16"),
            Refusal::DataFile => f.write_str("Cannot downgrade an image with a data file"),
            Refusal::Snapshots => f.write_str("Internal snapshots prevent downgrade of image"),
            Refusal::Incompatible(bits) => write!(f, "Cannot downgrade an image with incompatible features {bits:#x} set"),
            Refusal::ZstdClusters => f.write_str("Cannot downgrade an image with zstd compression type and existing compressed clusters"),
            Refusal::Bitmaps => f.write_str("Cannot downgrade an image with persistent bitmaps (Strata; QEMU keeps them as inconsistent bitmaps)"),
        }
    }
}

/// Repairs a dirty image, then reads its layout.
async fn layout(io: &Io<'_, '_>, file: NodeId) -> Result<Layout> {
    repair_if_dirty(io, file).await?;
    let lay = Layout::read(io, file).await?;
    if lay.header.incompatible & incompat::DIRTY != 0 {
        return Err(Error::BadImage { what: "dirty image: it could not be repaired" });
    }
    Ok(lay)
}

/// Upgrades the version 2 image in `file` to version 3 (nothing to do for version 3). `mem`
/// holds twice the header area (a cluster is always enough).
pub async fn upgrade(io: &Io<'_, '_>, file: NodeId, mem: &mut [u8]) -> Result<()> {
    let lay = layout(io, file).await?;
    if lay.header.version >= 3 {
        return Ok(());
    }
    // Version 3 snapshot entries carry at least 16 bytes of extra data.
    let mut v3: Header = lay.header;
    v3.version = 3;
    let mut walk = Walk::new(&v3);
    loop {
        match walk.next(io, file).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(Error::BadImage { what }) if what.contains("extra data") => {
                return Err(Error::Unsupported("compat=1.1: snapshot entries without the extra data version 3 needs (QEMU rewrites the snapshot table; Strata does not)"))
            }
            Err(e) => return Err(e),
        }
    }
    let fields = V3Fields { incompatible: 0, compatible: 0, autoclear: 0, refcount_order: 4, compression_type: 0 };
    rewrite(io, file, &lay, Some(fields), mem).await?;
    flush::flush_leaves(io, file).await
}

/// Downgrades the version 3 image in `file` to version 2 (nothing to do for version 2).
/// `Ok(Err(refusal))`: refused, nothing written. `mem`: at least three 4 KiB scratch buffers
/// plus twice the header area.
pub async fn downgrade(io: &Io<'_, '_>, file: NodeId, mem: &mut [u8]) -> Result<core::result::Result<(), Refusal>> {
    let lay = layout(io, file).await?;
    let h = lay.header;
    if h.version < 3 {
        return Ok(Ok(()));
    }
    if h.refcount_order != 4 {
        return Ok(Err(Refusal::RefcountWidth));
    }
    if h.incompatible & incompat::DATA_FILE != 0 {
        return Ok(Err(Refusal::DataFile));
    }
    let mut walk = Walk::new(&h);
    while let Some(s) = walk.next(io, file).await? {
        if s.vm_state_size > u64::from(u32::MAX) || s.disk_size != h.size {
            return Ok(Err(Refusal::Snapshots));
        }
    }
    let other = h.incompatible & !incompat::COMPRESSION;
    if other != 0 {
        return Ok(Err(Refusal::Incompatible(other)));
    }
    if mem.len() < 3 * SCRATCH {
        return Err(Error::NoSpace { what: "amend budget (at least 12 KiB)" });
    }
    let (a, rest) = mem.split_at_mut(SCRATCH);
    let (b, rest) = rest.split_at_mut(SCRATCH);
    if h.incompatible & incompat::COMPRESSION != 0 && has_compressed(io, file, &lay, a, b).await? {
        return Ok(Err(Refusal::ZstdClusters));
    }
    if extensions::read(io, file, &h).await?.bitmaps {
        return Ok(Err(Refusal::Bitmaps));
    }
    {
        let mut stored = Stored::new(a);
        zero_expand::expand(io, file, &lay, h.backing_file_offset != 0, &mut stored, b).await?;
    }
    rewrite(io, file, &lay, None, rest).await?;
    flush::flush_leaves(io, file).await?;
    Ok(Ok(()))
}

/// True if an L2 table of the active L1 table has a compressed entry (QEMU's
/// `qcow2_has_compressed_clusters`).
async fn has_compressed(io: &Io<'_, '_>, file: NodeId, lay: &Layout, a: &mut [u8], b: &mut [u8]) -> Result<bool> {
    let h = &lay.header;
    let chunk = lay.chunk();
    let bytes = u64::from(h.l1_size) * 8;
    let mut at = 0;
    while at < bytes {
        let n = (bytes - at).min(chunk as u64) as usize;
        child_io::read(io, file, h.l1_table_offset + at, &mut a[..n]).await?;
        for i in 0..n / 8 {
            let l2 = be64(a, i * 8) & L1_OFFSET;
            if l2 == 0 {
                continue;
            }
            let mut pos = 0;
            while pos < lay.cs {
                child_io::read(io, file, l2 + pos, &mut b[..chunk]).await?;
                if (0..chunk / 8).any(|j| be64(b, j * 8) & COMPRESSED != 0) {
                    return Ok(true);
                }
                pos += chunk as u64;
            }
        }
        at += n as u64;
    }
    Ok(false)
}
