//! A new backing file name and format in a qcow2 header (QEMU's `qcow2_change_backing_file`,
//! which rewrites the header cluster through `qcow2_update_header`): what `img rebase` writes.
//!
//! Pure logic over the image's first bytes, no I/O: the caller reads the header area (at most
//! the first cluster), [`relink`] lays it out anew in a second buffer, and the caller writes it
//! back. The layout is QEMU's: the header as it was (its own `header_length`), then the
//! extensions — the backing format first, the others as they were, in their order — the end
//! marker, and the backing file name right after it (a longer name may move it: the name
//! always follows the extensions). Everything must fit in the first cluster.

use crate::error::{Error, Result};

use super::extensions::BACKING_FORMAT;
use super::header::autoclear;

/// Longest backing file name (QEMU's 1023, as `backing_file_size` allows).
pub const MAX_BACKING_NAME: usize = 1023;

/// Header offsets of the backing name's place and length.
const BACKING_OFFSET: usize = 8;
const BACKING_SIZE: usize = 16;

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Lays out the header area `old` (the image's first bytes, at most a cluster: `cluster_size`)
/// with backing file `backing` (`None`: no backing file) and backing format `format` (`None`:
/// no backing format extension) into `out`. Returns how many bytes of `out` to write (the new
/// area, and zeros over what the old one used beyond it).
///
/// Refused as QEMU refuses them: a name longer than [`MAX_BACKING_NAME`], a format without a
/// name, a backing file for an image whose data file is raw ("the external data file alone
/// won't be enough"), and an area that would outgrow the first cluster.
pub fn relink(old: &[u8], out: &mut [u8], cluster_size: usize, backing: Option<&str>, format: Option<&str>) -> Result<usize> {
    let bad = |what| Err(Error::BadImage { what });
    if backing.is_some_and(|b| b.len() > MAX_BACKING_NAME) {
        return Err(Error::BadName { what: "backing file name too long" });
    }
    if format.is_some() && backing.is_none() {
        return Err(Error::BadOption { key: "backing_fmt", why: "a backing format needs a backing file" });
    }
    let version = be32(old, 4).ok_or(Error::BadImage { what: "header too short" })?;
    let header_len = match version {
        2 => 72usize,
        3 => be32(old, 100).ok_or(Error::BadImage { what: "header too short" })? as usize,
        _ => return Err(Error::Unsupported("unknown qcow2 version")),
    };
    if version == 3 && backing.is_some() && be64(old, 88).unwrap_or(0) & autoclear::DATA_FILE_RAW != 0 {
        return Err(Error::BadOption { key: "backing", why: "a backing file makes a raw external data file (data_file_raw) incomplete" });
    }
    let limit = cluster_size.min(out.len());
    if header_len > old.len() || header_len > limit {
        return bad("header_length inconsistent");
    }
    // Where the old area ends: the end marker, or the old backing name if it lies further.
    let mut at = header_len;
    let ext_end = loop {
        let (Some(kind), Some(len)) = (be32(old, at), be32(old, at + 4)) else {
            return bad("header extensions run past the header area");
        };
        if kind == 0 {
            break at + 8;
        }
        let next = (at + 8).checked_add((len as usize).next_multiple_of(8)).ok_or(Error::BadImage { what: "header extension too large" })?;
        if next > old.len() {
            return bad("header extension runs past the extension area");
        }
        at = next;
    };
    let (old_name_at, old_name_len) = (be64(old, BACKING_OFFSET).unwrap_or(0) as usize, be32(old, BACKING_SIZE).unwrap_or(0) as usize);
    let old_used = if old_name_at != 0 { ext_end.max(old_name_at.saturating_add(old_name_len)) } else { ext_end }.min(old.len());

    // The new area.
    let mut pos = 0;
    let mut put = |pos: &mut usize, bytes: &[u8]| -> Result<()> {
        let end = *pos + bytes.len();
        out.get_mut(*pos..end).filter(|_| end <= limit).ok_or(Error::NoSpace { what: "header cluster (backing file name and extensions)" })?.copy_from_slice(bytes);
        *pos = end;
        Ok(())
    };
    put(&mut pos, &old[..header_len])?;
    let pad = [0u8; 8];
    if let Some(f) = format {
        put(&mut pos, &BACKING_FORMAT.to_be_bytes())?;
        put(&mut pos, &(f.len() as u32).to_be_bytes())?;
        put(&mut pos, f.as_bytes())?;
        put(&mut pos, &pad[..f.len().next_multiple_of(8) - f.len()])?;
    }
    let mut at = header_len;
    while at + 8 < ext_end {
        let (kind, len) = (be32(old, at).unwrap_or(0), be32(old, at + 4).unwrap_or(0) as usize);
        let next = at + 8 + len.next_multiple_of(8);
        if kind != BACKING_FORMAT {
            put(&mut pos, &old[at..next])?;
        }
        at = next;
    }
    put(&mut pos, &pad)?;
    let (name_at, name_len) = match backing {
        Some(b) => {
            let at = pos;
            put(&mut pos, b.as_bytes())?;
            (at as u64, b.len() as u32)
        }
        None => (0, 0),
    };
    let written = pos;
    let end = old_used.max(written).min(limit);
    out.get_mut(written..end).ok_or(Error::NoSpace { what: "header cluster" })?.fill(0);
    out[BACKING_OFFSET..BACKING_OFFSET + 8].copy_from_slice(&name_at.to_be_bytes());
    out[BACKING_SIZE..BACKING_SIZE + 4].copy_from_slice(&name_len.to_be_bytes());
    Ok(end)
}

impl super::Qcow2 {
    /// Writes backing file `backing` (format `format`; `None`, `None`: no backing file) into the
    /// header of qcow2 node `node` and makes it stable (QEMU's `qcow2_change_backing_file`).
    /// The node keeps reading through the backing file it opened with: close it after this.
    /// The header area must fit one bounce buffer.
    pub async fn change_backing_file(
        &self,
        io: &crate::io::Io<'_, '_>,
        node: crate::node::NodeId,
        backing: Option<&str>,
        format: Option<&str>,
    ) -> Result<()> {
        self.check_writable()?;
        let file = Self::file(io, node)?;
        let mut bounce = io.bounce.take_for_copy(2).await?;
        let (Some(old), Some(out)) = bounce.pair() else { return Err(Error::NoSpace { what: "bounce buffers" }) };
        let cs = self.cluster_size() as usize;
        let area = cs.min(old.len()).min(out.len());
        let n = crate::io::child_io::read_upto(io, file, 0, &mut old[..area]).await?;
        old[n..area].fill(0);
        let len = relink(&old[..area], &mut out[..area], cs, backing, format)?;
        crate::io::child_io::write(io, file, 0, &out[..len]).await?;
        crate::io::flush::flush_leaves(io, file).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    /// A v3 header of 104 bytes with `exts` (type, data) and a backing name after them.
    fn image(exts: &[(u32, &[u8])], name: Option<&str>) -> [u8; 4096] {
        let mut b = [0u8; 4096];
        b[..4].copy_from_slice(b"QFI\xfb");
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&12u32.to_be_bytes());
        b[100..104].copy_from_slice(&104u32.to_be_bytes());
        let mut at = 104;
        for (kind, data) in exts {
            b[at..at + 4].copy_from_slice(&kind.to_be_bytes());
            b[at + 4..at + 8].copy_from_slice(&(data.len() as u32).to_be_bytes());
            b[at + 8..at + 8 + data.len()].copy_from_slice(data);
            at += 8 + data.len().next_multiple_of(8);
        }
        at += 8;
        if let Some(n) = name {
            b[at..at + n.len()].copy_from_slice(n.as_bytes());
            b[8..16].copy_from_slice(&(at as u64).to_be_bytes());
            b[16..20].copy_from_slice(&(n.len() as u32).to_be_bytes());
        }
        b
    }

    fn name(b: &[u8]) -> &str {
        let (at, len) = (be64(b, 8).unwrap() as usize, be32(b, 16).unwrap() as usize);
        core::str::from_utf8(&b[at..at + len]).unwrap()
    }

    #[test]
    fn a_longer_name_and_a_format_move_behind_the_extensions() {
        let old = image(&[(BACKING_FORMAT, b"raw"), (0x1234_5678, b"twelve bytes")], Some("a.raw"));
        let mut out = [0xffu8; 4096];
        let n = relink(&old, &mut out, 4096, Some("a-much-longer-name.qcow2"), Some("qcow2")).unwrap();
        assert_eq!(name(&out[..n]), "a-much-longer-name.qcow2");
        // The format first, then the other extension as it was, then the end marker.
        assert_eq!(be32(&out, 104), Some(BACKING_FORMAT));
        assert_eq!(&out[112..117], b"qcow2");
        assert_eq!(be32(&out, 120), Some(0x1234_5678));
        assert_eq!(&out[128..140], b"twelve bytes");
        assert_eq!(be64(&out, 144), Some(0));
        assert_eq!(be64(&out, 8), Some(152));
    }

    #[test]
    fn no_backing_drops_the_name_and_the_format_and_zeroes_what_they_used() {
        let old = image(&[(BACKING_FORMAT, b"qcow2")], Some("base.qcow2"));
        let mut out = [0xffu8; 4096];
        let n = relink(&old, &mut out, 4096, None, None).unwrap();
        assert_eq!((be64(&out, 8), be32(&out, 16)), (Some(0), Some(0)));
        assert_eq!(be32(&out, 104), Some(0));
        assert!(n >= 104 + 16 + 8 + 10 && out[104..n].iter().all(|&b| b == 0));
    }

    #[test]
    fn refusals() {
        let old = image(&[], None);
        let mut out = [0u8; 4096];
        let long = "x".repeat(MAX_BACKING_NAME + 1);
        assert!(relink(&old, &mut out, 4096, Some(&long), None).is_err());
        assert!(relink(&old, &mut out, 4096, None, Some("raw")).is_err());
        // A name that does not fit the (tiny) first cluster.
        assert!(relink(&old[..512], &mut out[..512], 512, Some(&"y".repeat(500)), None).is_err());
        let mut raw = image(&[], None);
        raw[88..96].copy_from_slice(&autoclear::DATA_FILE_RAW.to_be_bytes());
        assert!(relink(&raw, &mut out, 4096, Some("b"), Some("raw")).is_err());
    }
}
