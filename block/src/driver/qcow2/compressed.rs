//! Compressed clusters (`qcow2.txt`, "Compressed Clusters Descriptor"): raw deflate decoded
//! through a bounded decoder ([`crate::io::cache::Inflater`]: 32 KiB window, 16 KiB input steps), so
//! a 2 MiB cluster needs no 2 MiB buffer; only the requested part of the output is copied out.
//!
//! As QEMU: the stream must produce a whole cluster (it may stop there without an end marker);
//! bytes of the descriptor's last sector past the end of the file read as zeros (QEMU writes such
//! images); a descriptor with a whole sector past the end was refused when it was mapped
//! ([`super::entry_rules::compressed_extent`]). zstd clusters are decoded by
//! [`super::compressed_zstd`].

use miniz_oxide::inflate::core::{decompress_with_limit, inflate_flags::TINFL_FLAG_HAS_MORE_INPUT};
use miniz_oxide::inflate::TINFLStatus;

use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::{NodeId, Role};
use crate::io::child_io;

use crate::io::cache::WINDOW;
use super::header::Compression;
use super::Qcow2;

impl Qcow2 {
    // The decoder's buffers stay borrowed across the reads that fill them: the decoder is taken
    // from the pool exclusively first (`take_inflater`), and `try_borrow_mut` fails, not panics.
    #[allow(clippy::await_holding_refcell_ref)] // reason: exclusive by the pool's busy flag
    /// Decodes the compressed cluster of `csize` bytes at `host` in `node`'s file and copies
    /// its bytes `[skip, skip + out.len())` to `out`.
    pub(crate) async fn read_compressed(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        host: u64,
        csize: u64,
        skip: u64,
        out: &mut [u8],
    ) -> Result<()> {
        let cs = self.cluster_size();
        if skip.checked_add(out.len() as u64).is_none_or(|e| e > cs) {
            return Err(Error::BadGraph("compressed read beyond its cluster"));
        }
        let file = io.node(node)?.child(Role::File).ok_or(Error::BadGraph("qcow2 node without a file child"))?;
        if host >= child_io::size(io, file)? {
            return Err(Error::Corrupt { what: "L2 entry: compressed cluster starts past the end of the file", offset: host });
        }
        if self.compression == Compression::Zstd {
            return self.read_zstd(io, file, host, csize, skip, out).await;
        }
        let taken = io.meta.take_inflater().await?;
        let inflater = taken.0;
        let (Ok(mut state), Ok(mut window), Ok(mut input)) =
            (inflater.state.try_borrow_mut(), inflater.window.try_borrow_mut(), inflater.input.try_borrow_mut())
        else {
            return Err(Error::BadGraph("decompressor busy"));
        };
        state.init();
        let corrupt = |what| Error::Corrupt { what, offset: host };
        let (mut fetched, mut produced) = (0u64, 0u64);
        let (mut avail_start, mut avail_end) = (0usize, 0usize);
        let mut out_pos = 0usize;
        let mut stalled = 0u32;
        let want_end = skip + out.len() as u64;
        loop {
            if avail_start == avail_end && fetched < csize {
                let n = (csize - fetched).min(input.len() as u64) as usize;
                child_io::read_upto(io, file, host + fetched, &mut input[..n]).await?;
                fetched += n as u64;
                avail_start = 0;
                avail_end = n;
            }
            let more = fetched < csize;
            let flags = if more { TINFL_FLAG_HAS_MORE_INPUT } else { 0 };
            let limit = (cs - produced) as usize;
            let (status, used, written) =
                decompress_with_limit(&mut state, &input[avail_start..avail_end], &mut window[..], out_pos, limit, flags);
            avail_start += used;
            // Copy what of [produced, produced + written) the caller wants.
            let (lo, hi) = (produced.max(skip), (produced + written as u64).min(want_end));
            if lo < hi {
                let from = out_pos + (lo - produced) as usize;
                let to = (lo - skip) as usize;
                let n = (hi - lo) as usize;
                out[to..to + n].copy_from_slice(&window[from..from + n]);
            }
            produced += written as u64;
            out_pos = (out_pos + written) & (WINDOW - 1);
            if produced >= cs {
                return Ok(());
            }
            match status {
                TINFLStatus::Done => return Err(corrupt("compressed cluster decodes to less than a cluster")),
                TINFLStatus::NeedsMoreInput | TINFLStatus::HasMoreOutput => {
                    // No progress twice in a row (with input to refill in between) is a stream
                    // that never ends: refuse it rather than spin.
                    stalled = if used == 0 && written == 0 { stalled + 1 } else { 0 };
                    if stalled > 2 || (stalled > 0 && fetched >= csize && avail_start == avail_end) {
                        return Err(corrupt("compressed cluster data ends before a whole cluster"));
                    }
                }
                TINFLStatus::FailedCannotMakeProgress => return Err(corrupt("compressed cluster data ends before a whole cluster")),
                _ => return Err(corrupt("compressed cluster does not decode")),
            }
        }
    }
}
