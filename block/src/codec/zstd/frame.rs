//! Frames (RFC 8878, section 3.1): the frame header, skippable frames, and the walk from
//! block to block up to the optional content checksum, as a state machine fed by the caller
//! in pieces of the sizes it asks for.

use super::ZstdError;

/// Magic number of a zstd frame.
pub const MAGIC: u32 = 0xFD2F_B528;
/// Skippable frames: magic numbers `0x184D2A50..=0x184D2A5F`.
const SKIPPABLE: u32 = 0x184D_2A50;

/// Largest window accepted, as libzstd's default decoder (`ZSTD_WINDOWLOG_LIMIT_DEFAULT`, 27):
/// QEMU refuses frames that declare more.
pub const WINDOW_MAX: u64 = 1 << 27;

/// What a frame header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Window size (the frame content size for single-segment frames).
    pub window: u64,
    /// Frame content size, when the header gives it.
    pub content_size: Option<u64>,
    /// A 4-byte content checksum follows the last block.
    pub checksum: bool,
}

/// What 4 bytes of magic announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A zstd frame: its header (after the magic) is this long, learned from its first byte.
    Frame,
    /// A skippable frame: 4 bytes of size follow.
    Skippable,
}

/// Classifies a frame by its magic number.
pub fn start(magic: [u8; 4]) -> Result<Start, ZstdError> {
    let m = u32::from_le_bytes(magic);
    if m == MAGIC {
        Ok(Start::Frame)
    } else if m & 0xFFFF_FFF0 == SKIPPABLE {
        Ok(Start::Skippable)
    } else {
        Err(ZstdError::Corrupt("not a zstd frame (bad magic number)"))
    }
}

/// Bytes of the frame header (after the magic) announced by its descriptor byte.
pub fn header_len(descriptor: u8) -> usize {
    let fcs_flag = descriptor >> 6;
    let single = descriptor & 0x20 != 0;
    let dict = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let fcs = match fcs_flag {
        0 => usize::from(single),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    1 + usize::from(!single) + dict + fcs
}

/// Parses a frame header (after the magic): `src` holds exactly [`header_len`] bytes.
pub fn header(src: &[u8]) -> Result<Header, ZstdError> {
    let Some(&d) = src.first() else {
        return Err(ZstdError::Corrupt("frame header missing"));
    };
    if src.len() != header_len(d) {
        return Err(ZstdError::Corrupt("frame header length"));
    }
    if d & 0x08 != 0 {
        return Err(ZstdError::Corrupt("reserved bit set in the frame header"));
    }
    let single = d & 0x20 != 0;
    let mut at = 1;
    let mut window = 0u64;
    if !single {
        let w = src[at];
        at += 1;
        let log = 10 + u32::from(w >> 3);
        let base = 1u64 << log;
        window = base + (base / 8) * u64::from(w & 7);
    }
    let le = |bytes: &[u8]| {
        bytes
            .iter()
            .rev()
            .fold(0u64, |v, &b| (v << 8) | u64::from(b))
    };
    let dict_len = [0, 1, 2, 4][usize::from(d & 3)];
    let dict = le(&src[at..at + dict_len]);
    at += dict_len;
    if dict != 0 {
        return Err(ZstdError::Dictionary);
    }
    let fcs = &src[at..];
    let content_size = match fcs.len() {
        0 => None,
        2 => Some(le(fcs) + 256),
        _ => Some(le(fcs)),
    };
    if single {
        window = content_size.unwrap_or(0);
    }
    if window > WINDOW_MAX {
        return Err(ZstdError::Corrupt("frame window larger than 128 MiB"));
    }
    Ok(Header {
        window,
        content_size,
        checksum: d & 0x04 != 0,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    #[test]
    fn headers() {
        // Single segment, 1-byte content size 100, checksum.
        assert_eq!(header_len(0x24), 2);
        assert_eq!(
            header(&[0x24, 100]).unwrap(),
            Header {
                window: 100,
                content_size: Some(100),
                checksum: true
            }
        );
        // Window descriptor: exponent 6, mantissa 2 -> 64 KiB + 2 * 8 KiB; 2-byte size + 256.
        assert_eq!(header_len(0x40), 4);
        assert_eq!(
            header(&[0x40, 0x32, 0x00, 0x01]).unwrap(),
            Header {
                window: 80 * 1024,
                content_size: Some(512),
                checksum: false
            }
        );
        // No content size.
        assert_eq!(
            header(&[0x00, 0x00]).unwrap(),
            Header {
                window: 1024,
                content_size: None,
                checksum: false
            }
        );
        // Dictionary id 0 is no dictionary; others are refused.
        assert!(header(&[0x21, 0, 5]).is_ok());
        assert_eq!(header(&[0x21, 7, 5]), Err(ZstdError::Dictionary));
        assert!(header(&[0x08, 0]).is_err());
        assert!(header(&[0x24]).is_err());
        // Windows above 128 MiB: exponent 18 (2^28), or a single segment of 2^27 + 1 bytes.
        assert!(header(&[0x00, 18 << 3]).is_err());
        assert!(header(&[0x00, 17 << 3]).is_ok());
        assert!(header(&[0xa0, 1, 0, 0, 8]).is_err());
        assert_eq!(start(MAGIC.to_le_bytes()).unwrap(), Start::Frame);
        assert_eq!(
            start(0x184D_2A5Fu32.to_le_bytes()).unwrap(),
            Start::Skippable
        );
        assert!(start([0; 4]).is_err());
    }
}
