//! Rewriting the header cluster for another version (what QEMU's `qcow2_update_header` writes
//! after `qcow2_upgrade` or `qcow2_downgrade`): the header (72 bytes for version 2; 112 for
//! version 3), the extensions in QEMU's order — external data file name, backing format, the
//! feature-name table (version 3 only, left out of clusters of 4 KiB and less as `img create`
//! does), bitmaps, unknown ones as found — the end marker, and the backing file name. Built
//! in caller memory and written in one write (zeros over whatever the old one used beyond).

use crate::error::{Error, Result};
use crate::io::{child_io, Io};
use crate::node::NodeId;

use super::super::check::layout::Layout;
use super::super::create::{FEATURES, FEATURE_ENTRY};
use super::super::extensions::{BACKING_FORMAT, BITMAPS, DATA_FILE, FEATURE_NAMES, MAX_EXTENSIONS};
use super::super::header::{KNOWN_HEADER_LEN, V2_HEADER_LEN};

/// What the new header's version 3 fields hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct V3Fields {
    pub(crate) incompatible: u64,
    pub(crate) compatible: u64,
    pub(crate) autoclear: u64,
    pub(crate) refcount_order: u32,
    pub(crate) compression_type: u8,
}

/// One extension of the old header: (type, data start, data length) in the old bytes.
type Ext = (u32, usize, usize);

/// Appends `bytes` at `*at` of `buf`.
fn put(buf: &mut [u8], at: &mut usize, bytes: &[u8]) -> Result<()> {
    let end = at.checked_add(bytes.len()).ok_or(Error::NoSpace { what: "amend budget (the header cluster)" })?;
    buf.get_mut(*at..end).ok_or(Error::NoSpace { what: "amend budget (the header cluster)" })?.copy_from_slice(bytes);
    *at = end;
    Ok(())
}

fn word(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

/// Rewrites the header of the image in `file` as version 2 (`v3` None) or 3, keeping the
/// extensions (the feature-name table only in version 3) and the backing file name. `mem`
/// holds the old and the new header area (twice the bytes the old one uses).
pub(crate) async fn rewrite(io: &Io<'_, '_>, file: NodeId, lay: &Layout, v3: Option<V3Fields>, mem: &mut [u8]) -> Result<()> {
    let h = &lay.header;
    let cs = lay.cs as usize;
    let half = (mem.len() / 2).min(cs);
    let (old, rest) = mem.split_at_mut(half);
    let new = rest.get_mut(..half).ok_or(Error::NoSpace { what: "amend budget (the header cluster)" })?;
    let present = child_io::read_upto(io, file, 0, old).await?;
    old[present..].fill(0);
    if h.version == 3 && h.header_length as usize > KNOWN_HEADER_LEN {
        return Err(Error::Unsupported("header fields unknown to Strata (header_length above 112)"));
    }
    // The old extensions, up to the end marker.
    let area_end = if h.backing_file_offset != 0 { h.backing_file_offset as usize } else { cs };
    let mut exts: [Ext; 64] = [(0, 0, 0); 64];
    let mut count = 0;
    let mut pos = h.header_length as usize;
    let mut old_used = pos;
    for _ in 0..MAX_EXTENSIONS {
        if pos + 8 > area_end.min(half) {
            if pos + 8 <= area_end {
                return Err(Error::NoSpace { what: "amend budget (the header cluster)" });
            }
            break;
        }
        let (kind, len) = (word(old, pos), word(old, pos + 4) as usize);
        old_used = pos + 8;
        if kind == 0 {
            break;
        }
        if pos + 8 + len > area_end.min(half) {
            return Err(Error::BadImage { what: "header extension runs past the extension area" });
        }
        let slot = exts.get_mut(count).ok_or(Error::Unsupported("more than 64 header extensions"))?;
        *slot = (kind, pos + 8, len);
        count += 1;
        pos += 8 + len.div_ceil(8) * 8;
        old_used = pos;
    }
    let name = (h.backing_file_offset as usize, h.backing_file_size as usize);
    if name.0 != 0 {
        old_used = old_used.max(name.0 + name.1);
        if name.0 + name.1 > half {
            return Err(Error::NoSpace { what: "amend budget (the header cluster)" });
        }
    }
    let exts = &exts[..count];

    new.fill(0);
    let mut at = 0;
    put(new, &mut at, &old[..V2_HEADER_LEN as usize])?;
    new[4..8].copy_from_slice(&(if v3.is_some() { 3u32 } else { 2 }).to_be_bytes());
    if let Some(f) = v3 {
        put(new, &mut at, &f.incompatible.to_be_bytes())?;
        put(new, &mut at, &f.compatible.to_be_bytes())?;
        put(new, &mut at, &f.autoclear.to_be_bytes())?;
        put(new, &mut at, &f.refcount_order.to_be_bytes())?;
        put(new, &mut at, &(KNOWN_HEADER_LEN as u32).to_be_bytes())?;
        put(new, &mut at, &[f.compression_type])?;
        at = KNOWN_HEADER_LEN;
    }
    let copy = |new: &mut [u8], at: &mut usize, e: &Ext| -> Result<()> {
        put(new, at, &e.0.to_be_bytes())?;
        put(new, at, &(e.2 as u32).to_be_bytes())?;
        put(new, at, &old[e.1..e.1 + e.2])?;
        *at = at.next_multiple_of(8);
        Ok(())
    };
    for kind in [DATA_FILE, BACKING_FORMAT] {
        for e in exts.iter().filter(|e| e.0 == kind) {
            copy(new, &mut at, e)?;
        }
    }
    if v3.is_some() && cs > 4096 {
        put(new, &mut at, &FEATURE_NAMES.to_be_bytes())?;
        put(new, &mut at, &((FEATURES.len() * FEATURE_ENTRY) as u32).to_be_bytes())?;
        for (kind, bit, text) in FEATURES {
            let start = at;
            put(new, &mut at, &[kind, bit])?;
            put(new, &mut at, text.as_bytes())?;
            at = start + FEATURE_ENTRY;
        }
    }
    for e in exts.iter().filter(|e| e.0 == BITMAPS) {
        copy(new, &mut at, e)?;
    }
    for e in exts.iter().filter(|e| ![DATA_FILE, BACKING_FORMAT, BITMAPS, FEATURE_NAMES].contains(&e.0)) {
        copy(new, &mut at, e)?;
    }
    put(new, &mut at, &[0u8; 8])?;
    if name.0 != 0 {
        new[8..16].copy_from_slice(&(at as u64).to_be_bytes());
        put(new, &mut at, &old[name.0..name.0 + name.1])?;
    }
    if at > cs {
        return Err(Error::Unsupported("the rewritten header does not fit in the header cluster"));
    }
    let len = at.max(old_used).next_multiple_of(512).min(cs).min(half);
    child_io::write(io, file, 0, &new[..len]).await
}
