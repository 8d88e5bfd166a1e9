//! Header extensions (`qcow2.txt`, "Header extensions"): the area after the header up to the
//! backing file name (or the end of the first cluster), walked once at open. Backing format and
//! data-file name are kept (the names by position, read again when the chain is opened); the
//! feature-name table is noted and skipped, the bitmaps extension checked (as QEMU) and skipped;
//! unknown extensions are skipped. Extensions that contradict the feature bits are refused.

use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::NodeId;
use crate::io::child_io;

use super::header::{autoclear, incompat, Header};

/// Backing file format name.
pub const BACKING_FORMAT: u32 = 0xe279_2aca;
/// Feature name table.
pub const FEATURE_NAMES: u32 = 0x6803_f857;
/// Bitmaps.
pub const BITMAPS: u32 = 0x2385_2875;
/// Full disk encryption header pointer.
pub const CRYPTO: u32 = 0x0537_be77;
/// External data file name.
pub const DATA_FILE: u32 = 0x4441_5441;

/// Longest backing format name (QEMU keeps 15 bytes and a NUL).
pub const MAX_FORMAT_NAME: usize = 15;
/// Longest data file name.
pub const MAX_DATA_FILE_NAME: u32 = 1023;
/// Length of the bitmaps extension.
const BITMAPS_LEN: usize = 24;
/// QEMU's limit on bitmaps in an image.
const MAX_BITMAPS: u32 = 65535;
/// QEMU's limit on the bitmap directory (1 KiB per bitmap).
const MAX_BITMAP_DIRECTORY: u64 = 1024 * MAX_BITMAPS as u64;
/// Most extensions walked (each takes at least 8 bytes, so a 2 MiB cluster could hold 256 Ki).
pub const MAX_EXTENSIONS: usize = 1024;

pub use crate::driver::NameRef;

/// What the extensions say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// Backing format name bytes (`backing_fmt_len` used).
    pub backing_fmt: [u8; MAX_FORMAT_NAME],
    /// Bytes of `backing_fmt` used (0: none).
    pub backing_fmt_len: u8,
    /// External data file name.
    pub data_file: Option<NameRef>,
    /// A feature-name table is present.
    pub feature_names: bool,
    /// A bitmaps extension is present (skipped).
    pub bitmaps: bool,
    /// The bitmap directory (offset, bytes, bitmaps) when the bitmaps autoclear bit says the
    /// extension is consistent (what `img check` counts, as QEMU's `nb_bitmaps`).
    pub bitmap_directory: Option<(u64, u64, u32)>,
    /// Unknown extensions skipped.
    pub unknown: u16,
}

impl Extensions {
    /// The backing format, if named.
    pub fn backing_format(&self) -> Option<&str> {
        let n = usize::from(self.backing_fmt_len);
        (n > 0).then(|| core::str::from_utf8(self.backing_fmt.get(..n).unwrap_or(&[])).unwrap_or(""))
    }
}

/// Walks the extension area of `header` in `file`, then checks what the extensions and the
/// feature bits say of each other.
pub async fn read(io: &Io<'_, '_>, file: NodeId, header: &Header) -> Result<Extensions> {
    let ext = walk(io, file, header).await?;
    let bad = |what| Err(Error::BadImage { what });
    // "It is an error if this bit is set without the bitmaps extension present" (QEMU loads no
    // bitmaps and says nothing).
    if header.autoclear & autoclear::BITMAPS != 0 && !ext.bitmaps {
        return bad("bitmaps bit set without a bitmaps extension");
    }
    // The name "may be present if this bit is set" (QEMU ignores a name without the bit).
    if ext.data_file.is_some() && header.incompatible & incompat::DATA_FILE == 0 {
        return bad("external data file name without the external data file bit");
    }
    Ok(ext)
}

/// The bitmaps extension's fields, checked as QEMU does when the autoclear bit says they are
/// consistent (`qcow2_read_extensions`); Strata reads no bitmap.
fn check_bitmaps(b: &[u8; BITMAPS_LEN], cluster: u64) -> Result<()> {
    let bad = |what| Err(Error::BadImage { what });
    let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let dword = |i: usize| (u64::from(word(i)) << 32) | u64::from(word(i + 4));
    let nb = word(0);
    if nb == 0 || nb > MAX_BITMAPS {
        return bad("bitmaps extension: number of bitmaps not in 1..=65535");
    }
    if word(4) != 0 {
        return bad("bitmaps extension: reserved field not zero");
    }
    if dword(8) > MAX_BITMAP_DIRECTORY {
        return bad("bitmaps extension: bitmap directory too large");
    }
    if !dword(16).is_multiple_of(cluster) {
        return bad("bitmaps extension: bitmap directory offset not cluster-aligned");
    }
    Ok(())
}

async fn walk(io: &Io<'_, '_>, file: NodeId, header: &Header) -> Result<Extensions> {
    let bad = |what| Err(Error::BadImage { what });
    let cluster = header.cluster_size();
    let file_size = child_io::size(io, file)?;
    let mut end = if header.backing_file_offset != 0 { header.backing_file_offset.min(cluster) } else { cluster };
    end = end.min(file_size);
    let mut pos = u64::from(header.header_length);
    let mut ext = Extensions::default();
    let mut seen = 0u32;
    for _ in 0..MAX_EXTENSIONS {
        if pos + 8 > end {
            // QEMU reads no further than the area; a missing end marker at its very end is fine.
            if pos == end || pos >= file_size {
                return Ok(ext);
            }
            return bad("header extension area overflows");
        }
        let mut head = [0u8; 8];
        child_io::read(io, file, pos, &mut head).await?;
        let kind = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        // The length is checked before the type, the end marker's too (as QEMU does).
        let data = pos + 8;
        if data + u64::from(len) > end {
            return bad("header extension runs past the extension area");
        }
        if kind == 0 {
            return Ok(ext);
        }
        let bit = match kind {
            BACKING_FORMAT => 1,
            FEATURE_NAMES => 2,
            BITMAPS => 4,
            CRYPTO => 8,
            DATA_FILE => 16,
            _ => 0,
        };
        if bit != 0 && seen & bit != 0 {
            return bad("header extension appears twice");
        }
        seen |= bit;
        match kind {
            BACKING_FORMAT => {
                if len as usize > MAX_FORMAT_NAME {
                    return Err(Error::BadName { what: "backing format name too long" });
                }
                child_io::read(io, file, data, &mut ext.backing_fmt[..len as usize]).await?;
                ext.backing_fmt_len = len as u8;
            }
            FEATURE_NAMES => {
                if len % 48 != 0 {
                    return bad("feature name table length not a multiple of 48");
                }
                ext.feature_names = true;
            }
            BITMAPS => {
                if len as usize != BITMAPS_LEN {
                    return bad("bitmaps extension length not 24");
                }
                if header.autoclear & autoclear::BITMAPS != 0 {
                    let mut b = [0u8; BITMAPS_LEN];
                    child_io::read(io, file, data, &mut b).await?;
                    check_bitmaps(&b, cluster)?;
                    let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
                    let dword = |i: usize| (u64::from(word(i)) << 32) | u64::from(word(i + 4));
                    ext.bitmap_directory = Some((dword(16), dword(8), word(0)));
                }
                ext.bitmaps = true;
            }
            // Only the LUKS crypt method has this header, and Strata opens no encrypted image
            // (crypt_method is 0 here): QEMU refuses the extension too.
            CRYPTO => return bad("full disk encryption header extension without LUKS encryption"),
            DATA_FILE => {
                if len > MAX_DATA_FILE_NAME {
                    return Err(Error::BadName { what: "data file name too long" });
                }
                ext.data_file = Some(NameRef { offset: data, len: len as u16 });
            }
            _ => ext.unknown = ext.unknown.saturating_add(1),
        }
        pos = data + u64::from(len).div_ceil(8) * 8;
    }
    bad("too many header extensions")
}
