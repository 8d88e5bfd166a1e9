//! The literals section of a compressed block (RFC 8878, section 3.1.1.3.1): its header, and
//! the literals themselves, raw, RLE or Huffman-coded in one or four streams (with a new tree,
//! or "treeless" with the frame's last one).

use super::huffman::Table as Huffman;
use super::{ZstdError, BLOCK_MAX};

/// How the literals are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Stored as they are.
    Raw,
    /// One byte, repeated.
    Rle,
    /// Huffman-coded with a tree description first.
    Compressed,
    /// Huffman-coded with the previous tree.
    Treeless,
}

/// A parsed literals section header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Storage.
    pub kind: Kind,
    /// Literal bytes the section produces.
    pub regenerated: usize,
    /// Bytes of the section after its header (tree and streams, or the raw bytes, or 1 for RLE).
    pub compressed: usize,
    /// Header bytes.
    pub header_len: usize,
    /// Four Huffman streams (else one).
    pub four: bool,
}

/// Parses the literals section header at the start of `src`.
pub fn header(src: &[u8]) -> Result<Header, ZstdError> {
    let short = ZstdError::Corrupt("literals header past the end of the block");
    let b0 = *src.first().ok_or(short)?;
    let byte = |i: usize| src.get(i).copied().map(usize::from).ok_or(short);
    let kind = match b0 & 3 {
        0 => Kind::Raw,
        1 => Kind::Rle,
        2 => Kind::Compressed,
        _ => Kind::Treeless,
    };
    let format = (b0 >> 2) & 3;
    let b0 = usize::from(b0);
    let h = match kind {
        Kind::Raw | Kind::Rle => {
            let (regenerated, header_len) = match format {
                0 | 2 => (b0 >> 3, 1),
                1 => ((b0 >> 4) + (byte(1)? << 4), 2),
                _ => ((b0 >> 4) + (byte(1)? << 4) + (byte(2)? << 12), 3),
            };
            let compressed = if kind == Kind::Rle { 1 } else { regenerated };
            Header {
                kind,
                regenerated,
                compressed,
                header_len,
                four: false,
            }
        }
        Kind::Compressed | Kind::Treeless => {
            let (header_len, size_bits, four) = match format {
                0 => (3, 10, false),
                1 => (3, 10, true),
                2 => (4, 14, true),
                _ => (5, 18, true),
            };
            let mut v: u64 = 0;
            for i in 0..header_len {
                v |= (byte(i)? as u64) << (8 * i);
            }
            let v = v >> 4;
            let mask = (1u64 << size_bits) - 1;
            Header {
                kind,
                regenerated: (v & mask) as usize,
                compressed: ((v >> size_bits) & mask) as usize,
                header_len,
                four,
            }
        }
    };
    if h.regenerated > BLOCK_MAX {
        return Err(ZstdError::Corrupt("more literals than a block holds"));
    }
    Ok(h)
}

/// Decodes the literals of section `h` (whose bytes after the header are `body`, exactly
/// `h.compressed` of them) into `out` (exactly `h.regenerated` bytes), reading or replacing the
/// frame's Huffman table.
pub fn decode(
    h: &Header,
    body: &[u8],
    huffman: &mut Huffman,
    out: &mut [u8],
) -> Result<(), ZstdError> {
    if out.len() != h.regenerated || body.len() != h.compressed {
        return Err(ZstdError::Corrupt("literals section sizes"));
    }
    match h.kind {
        Kind::Raw => out.copy_from_slice(body),
        Kind::Rle => out.fill(body.first().copied().unwrap_or(0)),
        Kind::Compressed | Kind::Treeless => {
            let streams = if h.kind == Kind::Compressed {
                let used = huffman.read(body)?;
                body.get(used..)
                    .ok_or(ZstdError::Corrupt("Huffman tree longer than the literals"))?
            } else if huffman.ready() {
                body
            } else {
                return Err(ZstdError::Corrupt(
                    "treeless literals without a previous tree",
                ));
            };
            if !h.four {
                return huffman.decode(streams, out);
            }
            decode_four(streams, huffman, out)?;
        }
    }
    Ok(())
}

/// Four streams behind a jump table of three little-endian sizes.
fn decode_four(src: &[u8], huffman: &Huffman, out: &mut [u8]) -> Result<(), ZstdError> {
    let (Some(jump), Some(data)) = (src.get(..6), src.get(6..)) else {
        return Err(ZstdError::Corrupt(
            "Huffman jump table past the end of the literals",
        ));
    };
    let size = |i: usize| usize::from(u16::from_le_bytes([jump[2 * i], jump[2 * i + 1]]));
    let (s1, s2, s3) = (size(0), size(1), size(2));
    let first3 = s1 + s2 + s3;
    if first3 > data.len() {
        return Err(ZstdError::Corrupt(
            "Huffman streams longer than the literals",
        ));
    }
    let seg = out.len().div_ceil(4);
    if 3 * seg > out.len() {
        return Err(ZstdError::Corrupt("too few literals for four streams"));
    }
    let (o1, rest) = out.split_at_mut(seg);
    let (o2, rest) = rest.split_at_mut(seg);
    let (o3, o4) = rest.split_at_mut(seg);
    let (d1, rest) = data.split_at(s1);
    let (d2, rest) = rest.split_at(s2);
    let (d3, d4) = rest.split_at(s3);
    huffman.decode(d1, o1)?;
    huffman.decode(d2, o2)?;
    huffman.decode(d3, o3)?;
    huffman.decode(d4, o4)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    #[test]
    fn header_formats() {
        assert_eq!(
            header(&[0b1010_0000]).unwrap(),
            Header {
                kind: Kind::Raw,
                regenerated: 20,
                compressed: 20,
                header_len: 1,
                four: false
            }
        );
        assert_eq!(
            header(&[0b1010_0101, 0x01]).unwrap(),
            Header {
                kind: Kind::Rle,
                regenerated: 0x1a,
                compressed: 1,
                header_len: 2,
                four: false
            }
        );
        // Compressed, 4 streams, 3-byte header: regenerated 0x123, compressed 0x045.
        let v: u32 = (0x045 << 14) | (0x123 << 4) | (1 << 2) | 2;
        let b = v.to_le_bytes();
        assert_eq!(
            header(&b[..3]).unwrap(),
            Header {
                kind: Kind::Compressed,
                regenerated: 0x123,
                compressed: 0x45,
                header_len: 3,
                four: true
            }
        );
        assert!(header(&[]).is_err());
        assert!(header(&[0b1100]).is_err());
        // 18-bit sizes above the block maximum.
        assert!(header(&[0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
