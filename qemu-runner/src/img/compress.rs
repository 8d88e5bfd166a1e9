//! Compressors for `img convert -c`: one guest cluster in, a payload for
//! `Qcow2::write_compressed` out, or nothing when the cluster does not compress smaller (the
//! caller then writes it uncompressed, as qemu-img does).
//!
//! - **deflate** (`compression_type=zlib`): raw deflate (no zlib header) with QEMU's
//!   parameters (`qcow2_compress`: `deflateInit2(Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
//!   Z_DEFAULT_STRATEGY)`: level 6, a 4 KiB window, memLevel 9), by zlib-rs, a Rust port of
//!   zlib-ng (miniz_oxide, used before, has only a 32 KiB window and took about 1.3 times
//!   qemu-img's CPU on incompressible data, where every cluster is compressed and thrown away).
//! - **zstd**: ruzstd's encoder (its `Fastest` level, about zstd level 1; QEMU uses the
//!   library's default, level 3). Pure Rust, so the host tool needs no C toolchain; the block
//!   crate's decoder and QEMU's read its frames.

use strata_block::driver::qcow2::header::Compression;

/// QEMU's deflate parameters: zlib's `Z_DEFAULT_COMPRESSION` level, raw deflate with a 4 KiB
/// window (`-12`), memLevel 9.
const DEFLATE: zlib_rs::DeflateConfig = zlib_rs::DeflateConfig {
    level: 6,
    method: zlib_rs::Method::Deflated,
    window_bits: -12,
    mem_level: 9,
    strategy: zlib_rs::Strategy::Default,
};

/// `data` compressed with `codec`, if the result is shorter than `limit` bytes (QEMU stores a
/// cluster compressed only if it takes at most `cluster_size - 1` bytes).
pub fn compress(codec: Compression, data: &[u8], limit: usize) -> Option<Vec<u8>> {
    let out = match codec {
        Compression::Zlib => {
            // A payload of `limit` bytes or more is of no use: deflate into `limit - 1` bytes and
            // give up when they do not suffice (QEMU's `qcow2_compress` does the same).
            let mut buf = vec![0u8; limit.saturating_sub(1)];
            let (out, code) = zlib_rs::compress_slice(&mut buf, data, DEFLATE);
            if code != zlib_rs::ReturnCode::Ok {
                return None;
            }
            let n = out.len();
            buf.truncate(n);
            buf
        }
        Compression::Zstd => {
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
        }
    };
    (!out.is_empty() && out.len() < limit).then_some(out)
}

/// [`compress`] of every cluster in `clusters`, in order, spread over the host's cores: the
/// calling thread takes one share and scoped threads the others (qemu-img compresses in its
/// coroutines over a thread pool). A single cluster, or a single core, stays on this thread.
pub fn compress_all(codec: Compression, clusters: &[&[u8]], limit: usize) -> Vec<Option<Vec<u8>>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(MAX_THREADS).min(clusters.len()).max(1);
    if threads == 1 {
        return clusters.iter().map(|c| compress(codec, c, limit)).collect();
    }
    let share = clusters.len().div_ceil(threads);
    let one = |part: &[&[u8]]| -> Vec<Option<Vec<u8>>> {
        part.iter().map(|c| compress(codec, c, limit)).collect()
    };
    std::thread::scope(|scope| {
        let mut parts = clusters.chunks(share);
        let mine = parts.next().unwrap_or(&[]);
        let others: Vec<_> = parts.map(|part| scope.spawn(move || one(part))).collect();
        let mut out = one(mine);
        for handle in others {
            // A compressor thread that panicked gave nothing: its clusters are written plainly.
            let n = out.len();
            match handle.join() {
                Ok(part) => out.extend(part),
                Err(_) => out.resize_with(n + share, || None),
            }
        }
        out.truncate(clusters.len());
        out
    })
}

/// Most compressor threads per call (qemu-img's thread pool is 64 wide, but past the cores a
/// thread only waits).
const MAX_THREADS: usize = 16;

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

    #[test]
    fn compress_all_keeps_order_across_threads() {
        let cs = 4096;
        let clusters: Vec<Vec<u8>> = (0..37u32)
            .map(|i| {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(i);
                (0..cs)
                    .map(|j| {
                        if i % 3 == 0 {
                            (j / 64) as u8 ^ i as u8
                        } else {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x as u8
                        }
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<&[u8]> = clusters.iter().map(Vec::as_slice).collect();
        for codec in [Compression::Zlib, Compression::Zstd] {
            let all = compress_all(codec, &refs, cs);
            let one: Vec<_> = refs.iter().map(|c| compress(codec, c, cs)).collect();
            assert_eq!(all, one);
            assert_eq!(all.iter().filter(|p| p.is_some()).count(), 13);
        }
        assert!(compress_all(Compression::Zlib, &[], cs).is_empty());
    }

    #[test]
    fn deflate_payload_fits_below_the_limit_or_is_refused() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let d = compress(Compression::Zlib, &data, 65536).unwrap();
        // Give it exactly its own length as the limit: it must be refused (not < limit).
        assert!(compress(Compression::Zlib, &data, d.len()).is_none());
        // Deflate may want a few bytes of room past its final size to finish (as zlib does in
        // QEMU, where such a cluster is then written plainly): with some slack it fits.
        assert_eq!(compress(Compression::Zlib, &data, d.len() + 64).unwrap(), d);
    }
}
