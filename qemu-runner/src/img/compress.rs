//! Compressors for `img convert -c`: one guest cluster in, a payload for
//! `Qcow2::write_compressed` out, or nothing when the cluster does not compress smaller (the
//! caller then writes it uncompressed, as qemu-img does).
//!
//! - **deflate** (`compression_type=zlib`): raw deflate (no zlib header) at zlib's default
//!   level 6, as QEMU's `qcow2_compress` (`deflateInit2(Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12,
//!   9, Z_DEFAULT_STRATEGY)`). miniz_oxide's window is 32 KiB, not QEMU's 4 KiB: its matches may
//!   reach further back than 4 KiB. QEMU inflates a cluster with one `inflate()` call into a
//!   buffer that holds the whole cluster, and zlib resolves such distances from that output
//!   buffer, so QEMU reads them (the tests check with `qemu-img compare`); the bytes differ
//!   from QEMU's own output, the data does not.
//! - **zstd**: ruzstd's encoder (its `Fastest` level, about zstd level 1; QEMU uses the
//!   library's default, level 3). Pure Rust, so the host tool needs no C toolchain; the block
//!   crate's decoder and QEMU's read its frames.

use strata_block::driver::qcow2::header::Compression;

/// zlib's `Z_DEFAULT_COMPRESSION` level.
const DEFLATE_LEVEL: u8 = 6;

/// `data` compressed with `codec`, if the result is shorter than `limit` bytes (QEMU stores a
/// cluster compressed only if it takes at most `cluster_size - 1` bytes).
pub fn compress(codec: Compression, data: &[u8], limit: usize) -> Option<Vec<u8>> {
    let out = match codec {
        Compression::Zlib => miniz_oxide::deflate::compress_to_vec(data, DEFLATE_LEVEL),
        Compression::Zstd => {
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
        }
    };
    (!out.is_empty() && out.len() < limit).then_some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn compresses_and_inflates_back_or_gives_up() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i / 100) as u8).collect();
        let d = compress(Compression::Zlib, &data, 65536).unwrap();
        assert!(d.len() < 4096);
        assert_eq!(miniz_oxide::inflate::decompress_to_vec(&d).unwrap(), data);
        let z = compress(Compression::Zstd, &data, 65536).unwrap();
        assert!(z.len() < 65536);
        // Random bytes do not compress: the caller writes them plainly.
        let mut x = 0x1234_5678_9abc_def0u64;
        let noise: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(compress(Compression::Zlib, &noise, 65536).is_none());
        assert!(compress(Compression::Zstd, &noise, 65536).is_none());
    }
}
