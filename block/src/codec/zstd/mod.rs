//! A Zstandard decoder (RFC 8878) without a heap, for qcow2's zstd-compressed clusters.
//!
//! **What it decodes.** Frames one after another into one output buffer (QEMU accepts a
//! cluster made of several frames), skippable frames skipped; raw, RLE and compressed blocks;
//! raw, RLE and Huffman literals (one or four streams, a new tree or the frame's previous one);
//! sequences with predefined, RLE, described and repeated FSE tables and repeat offsets. The
//! content checksum, when a frame has one, is verified (XXH64); a frame content size, when
//! given, must match. Frames that need a dictionary are refused with
//! [`ZstdError::Dictionary`] (QEMU never writes them).
//!
//! **Memory.** [`Decoder`] is fixed-size: the three sequence tables (512 + 256 + 512 states of
//! 4 bytes), the Huffman table (2 x 2048 bytes) and a few words, about 9.3 KiB. The output is
//! the caller's buffer, and it must hold everything decoded (matches reach back to the start
//! of their frame, up to the window size): for a qcow2 cluster, the cluster. A block's literals
//! are decoded into the unused tail of that buffer, which the block's output reaches last, so no
//! separate literals buffer is needed. Input is fed in pieces: the decoder says how many bytes
//! it needs next ([`Decoder::need`]); at most one block (128 KiB) at a time.
//!
//! **Hostile input.** Every size, count, offset, table log and bit count is checked before it
//! is used; reading a bitstream past either end yields zeros and is detected afterwards. A
//! malformed frame is a [`ZstdError::Corrupt`], never a panic or an endless loop: every step
//! consumes input or changes state, and the output is bounded by the caller's buffer.

pub mod bits;
pub mod block;
pub mod checksum;
pub mod frame;
pub mod fse;
pub mod huffman;
pub mod literals;
pub mod sequences;

use huffman::Table as Huffman;
use sequences::Tables;

/// Largest block, compressed or not (`Block_Maximum_Size`'s upper bound).
pub const BLOCK_MAX: usize = 128 * 1024;

/// Why a stream does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZstdError {
    /// The data contradicts the format (which check failed).
    Corrupt(&'static str),
    /// The frame needs a dictionary.
    Dictionary,
    /// The input ended before the output was complete.
    Truncated,
}

/// Where the decoder is in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Before a frame: 4 bytes of magic number.
    Magic,
    /// A skippable frame's 4-byte size.
    SkipSize,
    /// Bytes of a skippable frame left.
    Skip(u64),
    /// The frame header's descriptor byte (peeked, not consumed).
    Descriptor,
    /// The frame header of this many bytes.
    Header(usize),
    /// A 3-byte block header.
    BlockHeader,
    /// Raw block bytes left.
    Raw(usize),
    /// An RLE block's byte, repeated this often.
    Rle(usize),
    /// A compressed block of this many bytes.
    Compressed(usize),
    /// The 4-byte content checksum.
    Checksum,
}

/// The decoder's fixed state (see the module docs).
pub struct Decoder {
    huffman: Huffman,
    tables: Tables,
    stage: Stage,
    /// The current block is the frame's last.
    last: bool,
    frame: frame::Header,
    /// Where the current frame's output starts.
    frame_start: usize,
}

impl Decoder {
    /// A decoder before its first frame.
    pub const fn new() -> Self {
        Self {
            huffman: Huffman::new(),
            tables: Tables::new(),
            stage: Stage::Magic,
            last: false,
            frame: frame::Header {
                window: 0,
                content_size: None,
                checksum: false,
            },
            frame_start: 0,
        }
    }

    /// Starts over: the next byte is the start of a frame.
    pub fn reset(&mut self) {
        self.stage = Stage::Magic;
        self.frame_start = 0;
    }

    /// Between frames (the output so far is complete).
    pub fn between_frames(&self) -> bool {
        self.stage == Stage::Magic
    }

    /// Bytes the next [`Decoder::step`] needs (at most [`BLOCK_MAX`]); with
    /// [`Decoder::takes_partial`], any non-zero number up to it will do.
    pub fn need(&self) -> usize {
        match self.stage {
            Stage::Magic | Stage::SkipSize | Stage::Checksum => 4,
            Stage::Skip(n) => n.min(BLOCK_MAX as u64) as usize,
            Stage::Descriptor | Stage::Rle(_) => 1,
            Stage::Header(n) | Stage::Compressed(n) => n,
            Stage::BlockHeader => 3,
            Stage::Raw(n) => n.min(BLOCK_MAX),
        }
    }

    /// The next step accepts fewer bytes than [`Decoder::need`] says (raw blocks, skipped
    /// frames).
    pub fn takes_partial(&self) -> bool {
        matches!(self.stage, Stage::Raw(_) | Stage::Skip(_))
    }

    /// Decodes from `input` (at least [`Decoder::need`] bytes, or fewer but one when
    /// [`Decoder::takes_partial`]) into `out` at `*pos`; returns the input bytes consumed.
    pub fn step(
        &mut self,
        input: &[u8],
        out: &mut [u8],
        pos: &mut usize,
    ) -> Result<usize, ZstdError> {
        let need = self.need();
        let take = if self.takes_partial() {
            need.min(input.len())
        } else {
            need
        };
        let Some(src) = input.get(..take) else {
            return Err(ZstdError::Truncated);
        };
        if take == 0 && need > 0 {
            return Err(ZstdError::Truncated);
        }
        let four = |s: &[u8]| [s[0], s[1], s[2], s[3]];
        match self.stage {
            Stage::Magic => {
                self.stage = match frame::start(four(src))? {
                    frame::Start::Frame => Stage::Descriptor,
                    frame::Start::Skippable => Stage::SkipSize,
                };
                Ok(4)
            }
            Stage::SkipSize => {
                let n = u32::from_le_bytes(four(src));
                self.stage = if n == 0 {
                    Stage::Magic
                } else {
                    Stage::Skip(u64::from(n))
                };
                Ok(4)
            }
            Stage::Skip(n) => {
                let left = n - take as u64;
                self.stage = if left == 0 {
                    Stage::Magic
                } else {
                    Stage::Skip(left)
                };
                Ok(take)
            }
            Stage::Descriptor => {
                self.stage = Stage::Header(frame::header_len(src[0]));
                Ok(0)
            }
            Stage::Header(_) => {
                self.frame = frame::header(src)?;
                self.frame_start = *pos;
                self.huffman.clear();
                self.tables.reset();
                self.stage = Stage::BlockHeader;
                Ok(take)
            }
            Stage::BlockHeader => {
                let h = block::header([src[0], src[1], src[2]])?;
                self.last = h.last;
                self.stage = match h.kind {
                    block::Kind::Raw => Stage::Raw(h.size),
                    block::Kind::Rle => Stage::Rle(h.size),
                    block::Kind::Compressed => Stage::Compressed(h.size),
                };
                if h.size == 0 && h.kind == block::Kind::Raw {
                    self.end_block(out, *pos)?;
                }
                Ok(3)
            }
            Stage::Raw(n) => {
                let dst = out
                    .get_mut(*pos..*pos + take)
                    .ok_or(ZstdError::Corrupt("frame decodes to more than its output"))?;
                dst.copy_from_slice(src);
                *pos += take;
                self.stage = Stage::Raw(n - take);
                if n == take {
                    self.end_block(out, *pos)?;
                }
                Ok(take)
            }
            Stage::Rle(n) => {
                let dst = out
                    .get_mut(*pos..*pos + n)
                    .ok_or(ZstdError::Corrupt("frame decodes to more than its output"))?;
                dst.fill(src[0]);
                *pos += n;
                self.end_block(out, *pos)?;
                Ok(1)
            }
            Stage::Compressed(_) => {
                block::decode(
                    src,
                    &mut self.huffman,
                    &mut self.tables,
                    out,
                    self.frame_start,
                    pos,
                )?;
                self.end_block(out, *pos)?;
                Ok(take)
            }
            Stage::Checksum => {
                let want = u32::from_le_bytes(four(src));
                let content = out.get(self.frame_start..*pos).unwrap_or(&[]);
                if checksum::xxh64(content) as u32 != want {
                    return Err(ZstdError::Corrupt("frame content checksum mismatch"));
                }
                self.stage = Stage::Magic;
                Ok(4)
            }
        }
    }

    /// After a block ending at `pos`: the next block, the checksum or the next frame.
    fn end_block(&mut self, _out: &[u8], pos: usize) -> Result<(), ZstdError> {
        if !self.last {
            self.stage = Stage::BlockHeader;
            return Ok(());
        }
        let produced = (pos - self.frame_start) as u64;
        if self.frame.content_size.is_some_and(|c| c != produced) {
            return Err(ZstdError::Corrupt("frame content size mismatch"));
        }
        self.stage = if self.frame.checksum {
            Stage::Checksum
        } else {
            Stage::Magic
        };
        Ok(())
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Decodes `input` until `out` is full, as QEMU decodes a compressed cluster: frames one after
/// another, stopping at the first frame boundary where `out` is full (bytes after it are
/// ignored). The output must be filled exactly, by whole frames.
pub fn decode_exact(decoder: &mut Decoder, input: &[u8], out: &mut [u8]) -> Result<(), ZstdError> {
    decoder.reset();
    let (mut at, mut pos) = (0usize, 0usize);
    loop {
        if pos == out.len() && decoder.between_frames() {
            return Ok(());
        }
        let rest = input.get(at..).unwrap_or(&[]);
        at += decoder.step(rest, out, &mut pos)?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    /// Frame: magic, single segment with 1-byte size, then blocks.
    fn frame(size: u8, checksum: bool, blocks: &[&[u8]]) -> std::vec::Vec<u8> {
        let mut f = frame::MAGIC.to_le_bytes().to_vec();
        f.push(0x20 | if checksum { 4 } else { 0 });
        f.push(size);
        for b in blocks {
            f.extend_from_slice(b);
        }
        f
    }

    #[test]
    fn raw_and_rle_blocks_and_skippable_frames() {
        // Raw "hello" (not last), RLE 'x' x3 (last).
        let raw = [(5 << 3) as u8, 0, 0, b'h', b'e', b'l', b'l', b'o'];
        let rle = [(3 << 3 | 2 | 1) as u8, 0, 0, b'x'];
        let f = frame(8, false, &[&raw, &rle]);
        let mut out = [0u8; 8];
        let mut d = Decoder::new();
        decode_exact(&mut d, &f, &mut out).unwrap();
        assert_eq!(&out, b"helloxxx");
        // A skippable frame before it, trailing garbage after it: both ignored.
        let mut s = 0x184D_2A53u32.to_le_bytes().to_vec();
        s.extend_from_slice(&3u32.to_le_bytes());
        s.extend_from_slice(b"abc");
        s.extend_from_slice(&f);
        s.extend_from_slice(&[0xff; 7]);
        decode_exact(&mut d, &s, &mut out).unwrap();
        assert_eq!(&out, b"helloxxx");
        // Two frames of 8 into 16 bytes.
        let mut two = f.clone();
        two.extend_from_slice(&f);
        let mut out16 = [0u8; 16];
        decode_exact(&mut d, &two, &mut out16).unwrap();
        assert_eq!(&out16, b"helloxxxhelloxxx");
    }

    #[test]
    fn size_mismatches_and_truncation_are_errors() {
        let raw = [(5 << 3 | 1) as u8, 0, 0, b'h', b'e', b'l', b'l', b'o'];
        let mut d = Decoder::new();
        // The header says 6 bytes, the block gives 5.
        assert!(decode_exact(&mut d, &frame(6, false, &[&raw]), &mut [0u8; 6]).is_err());
        // A frame of 5 into 6 bytes: the input ends before the output is full.
        assert_eq!(
            decode_exact(&mut d, &frame(5, false, &[&raw]), &mut [0u8; 6]),
            Err(ZstdError::Truncated)
        );
        // A frame of 5 into 4 bytes.
        assert!(decode_exact(&mut d, &frame(5, false, &[&raw]), &mut [0u8; 4]).is_err());
        for cut in 0..frame(5, false, &[&raw]).len() {
            let f = frame(5, false, &[&raw]);
            assert!(decode_exact(&mut d, &f[..cut], &mut [0u8; 5]).is_err());
        }
    }

    #[test]
    fn checksums_are_verified() {
        let raw = [(3 << 3 | 1) as u8, 0, 0, b'a', b'b', b'c'];
        let mut f = frame(3, true, &[&raw]);
        f.extend_from_slice(&(checksum::xxh64(b"abc") as u32).to_le_bytes());
        let mut out = [0u8; 3];
        decode_exact(&mut Decoder::new(), &f, &mut out).unwrap();
        let n = f.len();
        f[n - 1] ^= 1;
        assert!(decode_exact(&mut Decoder::new(), &f, &mut out).is_err());
    }
}
