//! Bit readers (RFC 8878, section 4.1 and "Bitstreams"): a forward reader, least significant
//! bit first, for FSE table descriptions, and a backward reader for FSE and Huffman streams,
//! which are read from their last byte (whose highest set bit marks the start) to their first.
//! Reading past either end yields zero bits and is remembered, never an out-of-bounds index.

use super::ZstdError;

/// Reads `src` forwards, bits of each byte from the least significant up.
pub struct ForwardBits<'a> {
    src: &'a [u8],
    /// Bits consumed so far.
    pos: usize,
}

impl<'a> ForwardBits<'a> {
    /// A reader at the first bit of `src`.
    pub fn new(src: &'a [u8]) -> Self {
        Self { src, pos: 0 }
    }

    /// The next `n` (at most 32) bits without consuming them; bits past the end read as zero.
    pub fn peek(&self, n: u32) -> u32 {
        let mut v: u64 = 0;
        let byte = self.pos / 8;
        for i in 0..5 {
            if let Some(&b) = self.src.get(byte + i) {
                v |= u64::from(b) << (8 * i);
            }
        }
        let v = v >> (self.pos % 8);
        (v & ((1u64 << n) - 1)) as u32
    }

    /// Consumes `n` bits.
    pub fn skip(&mut self, n: u32) {
        self.pos += n as usize;
    }

    /// Reads `n` (at most 32) bits.
    pub fn read(&mut self, n: u32) -> u32 {
        let v = self.peek(n);
        self.skip(n);
        v
    }

    /// Whole bytes consumed (a partial byte counts), or an error past the end.
    pub fn bytes_used(&self) -> Result<usize, ZstdError> {
        let used = self.pos.div_ceil(8);
        if used > self.src.len() {
            return Err(ZstdError::Corrupt(
                "FSE table description longer than its input",
            ));
        }
        Ok(used)
    }
}

/// Reads `src` backwards, from the bit below the final padding marker down to bit 0 of byte 0.
pub struct BackwardBits<'a> {
    src: &'a [u8],
    /// Bits not read yet (the next bit read is bit `left - 1`); may go "below zero" as
    /// `overrun`.
    left: usize,
    /// Bits read past the start (read as zeros).
    overrun: usize,
}

impl<'a> BackwardBits<'a> {
    /// A reader over `src`, whose last byte must be non-zero (it holds the padding marker).
    pub fn new(src: &'a [u8]) -> Result<Self, ZstdError> {
        let Some(&last) = src.last() else {
            return Err(ZstdError::Corrupt("empty bitstream"));
        };
        if last == 0 {
            return Err(ZstdError::Corrupt("bitstream without its end marker"));
        }
        let top = 7 - last.leading_zeros() as usize;
        Ok(Self {
            src,
            left: (src.len() - 1) * 8 + top,
            overrun: 0,
        })
    }

    /// Reads `n` (at most 32) bits as an unsigned number, most significant first; bits before
    /// the start of the stream read as zero (and count as overrun).
    pub fn read(&mut self, n: u32) -> u32 {
        let v = self.peek(n);
        self.consume(n);
        v
    }

    /// The next `n` (at most 32) bits without consuming them (zeros past the start).
    pub fn peek(&self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let n = n as usize;
        if self.overrun > 0 {
            return 0;
        }
        if self.left >= n {
            // Bits [left - n, left) of the little-endian stream.
            let lo = self.left - n;
            self.bits_at(lo, n)
        } else {
            // The `left` real bits, then zeros.
            let v = self.bits_at(0, self.left);
            v << (n - self.left)
        }
    }

    /// Consumes `n` bits.
    pub fn consume(&mut self, n: u32) {
        let n = n as usize;
        if self.left >= n && self.overrun == 0 {
            self.left -= n;
        } else {
            self.overrun += n - self.left.min(n);
            self.left = 0;
        }
    }

    /// `n` (at most 32) bits starting at bit `lo` (little-endian bit numbering).
    fn bits_at(&self, lo: usize, n: usize) -> u32 {
        if n == 0 {
            return 0;
        }
        let first = lo / 8;
        let v = match self.src.get(first..first + 8) {
            // One 8-byte load where the stream has them (all but its last 7 bytes).
            Some(w) => u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]),
            None => {
                let mut v: u64 = 0;
                for i in 0..5 {
                    if let Some(&b) = self.src.get(first + i) {
                        v |= u64::from(b) << (8 * i);
                    }
                }
                v
            }
        };
        ((v >> (lo % 8)) & ((1u64 << n) - 1)) as u32
    }

    /// Every bit was read, none past the start.
    pub fn finished(&self) -> bool {
        self.left == 0 && self.overrun == 0
    }

    /// More bits were read than the stream holds.
    pub fn overflowed(&self) -> bool {
        self.overrun > 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    #[test]
    fn forward_reads_lsb_first() {
        let mut r = ForwardBits::new(&[0b1010_1100, 0xff]);
        assert_eq!(r.read(2), 0b00);
        assert_eq!(r.read(3), 0b011);
        assert_eq!(r.read(5), 0b11_101);
        assert_eq!(r.bytes_used().unwrap(), 2);
        r.skip(7);
        assert_eq!(r.read(8), 0);
        assert!(r.bytes_used().is_err());
    }

    #[test]
    fn backward_starts_below_the_marker_and_pads_with_zeros() {
        // Last byte 0b0000_0101: marker at bit 2, then bits 1..0 = 0b01; byte 0 = 0xA5.
        let mut r = BackwardBits::new(&[0xA5, 0b0000_0101]).unwrap();
        assert_eq!(r.read(2), 0b01);
        assert_eq!(r.read(4), 0xA);
        assert!(!r.finished());
        assert_eq!(r.read(4), 0x5);
        assert!(r.finished());
        assert_eq!(r.read(3), 0);
        assert!(r.overflowed());
    }

    #[test]
    fn backward_partial_read_at_the_start_is_zero_filled() {
        let mut r = BackwardBits::new(&[0b0000_0011, 0x01]).unwrap();
        assert_eq!(r.read(4), 0);
        assert!(!r.finished());
        assert_eq!(r.read(6), 0b00_1100);
        assert!(r.overflowed());
        let mut r = BackwardBits::new(&[0b1100_0000, 0x01]).unwrap();
        // 8 bits left (byte 0); read 10: the 8 bits then two zeros.
        assert_eq!(r.peek(10), 0b11_0000_0000);
        r.consume(10);
        assert!(r.overflowed());
    }

    #[test]
    fn backward_refuses_empty_and_unmarked_streams() {
        assert!(BackwardBits::new(&[]).is_err());
        assert!(BackwardBits::new(&[1, 0]).is_err());
    }
}
