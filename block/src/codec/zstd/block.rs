//! Blocks (RFC 8878, section 3.1.1.2): the 3-byte block header, and the decoding of a
//! compressed block: literals section, then sequences section, into the output.

use super::huffman::Table as Huffman;
use super::literals;
use super::sequences::{self, Sink, Tables};
use super::{ZstdError, BLOCK_MAX};

/// Block types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `size` bytes stored as they are.
    Raw,
    /// One byte repeated `size` times.
    Rle,
    /// `size` bytes of compressed data.
    Compressed,
}

/// A block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The frame's last block.
    pub last: bool,
    /// Block type.
    pub kind: Kind,
    /// Block size (for RLE, the repeat count).
    pub size: usize,
}

/// Parses a block header.
pub fn header(b: [u8; 3]) -> Result<Header, ZstdError> {
    let v = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
    let kind = match (v >> 1) & 3 {
        0 => Kind::Raw,
        1 => Kind::Rle,
        2 => Kind::Compressed,
        _ => return Err(ZstdError::Corrupt("reserved block type")),
    };
    let size = (v >> 3) as usize;
    if size > BLOCK_MAX {
        return Err(ZstdError::Corrupt("block larger than 128 KiB"));
    }
    Ok(Header {
        last: v & 1 == 1,
        kind,
        size,
    })
}

/// Decodes the compressed block `src` into `out` at `*pos` (the frame began at `frame_start`).
pub fn decode(
    src: &[u8],
    huffman: &mut Huffman,
    tables: &mut Tables,
    out: &mut [u8],
    frame_start: usize,
    pos: &mut usize,
) -> Result<(), ZstdError> {
    let h = literals::header(src)?;
    let body_end = h.header_len + h.compressed;
    let body = src
        .get(h.header_len..body_end)
        .ok_or(ZstdError::Corrupt("literals past the end of the block"))?;
    let room = out.len() - *pos;
    if h.regenerated > room {
        return Err(ZstdError::Corrupt("block decodes to more than its output"));
    }
    // The literals wait in the unused tail of the output; sequences move them into place.
    let lit_at = out.len() - h.regenerated;
    literals::decode(&h, body, huffman, &mut out[lit_at..])?;
    let mut sink = Sink {
        out,
        pos: *pos,
        frame_start,
        lit_at,
        lit_len: h.regenerated,
    };
    sequences::execute(src.get(body_end..).unwrap_or(&[]), tables, &mut sink)?;
    *pos = sink.pos;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    #[test]
    fn block_headers() {
        assert_eq!(
            header([0x01, 0, 0]).unwrap(),
            Header {
                last: true,
                kind: Kind::Raw,
                size: 0
            }
        );
        assert_eq!(
            header([0x2a, 0x01, 0]).unwrap(),
            Header {
                last: false,
                kind: Kind::Rle,
                size: 37
            }
        );
        assert_eq!(
            header([0x05, 0, 0x10]).unwrap(),
            Header {
                last: true,
                kind: Kind::Compressed,
                size: 0x20000
            }
        );
        assert!(header([0x06, 0, 0]).is_err());
        assert!(header([0x0c, 0, 0x10]).is_err());
    }

    #[test]
    fn raw_literals_without_sequences() {
        // Literals: raw, 3 bytes "abc"; sequences: none.
        let src = [3 << 3, b'a', b'b', b'c', 0];
        let mut out = [0u8; 8];
        let mut pos = 2;
        decode(
            &src,
            &mut Huffman::new(),
            &mut Tables::new(),
            &mut out,
            0,
            &mut pos,
        )
        .unwrap();
        assert_eq!(pos, 5);
        assert_eq!(&out[2..5], b"abc");
        // No room for them.
        let mut pos = 6;
        assert!(decode(
            &src,
            &mut Huffman::new(),
            &mut Tables::new(),
            &mut out,
            0,
            &mut pos
        )
        .is_err());
    }
}
