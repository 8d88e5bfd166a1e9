//! zstd-compressed clusters (`compression_type=1`), read with one of the graph's zstd
//! decoders ([`crate::io::zstd`]), as QEMU's `qcow2_zstd_decompress` reads them: frames one
//! after another (skippable frames skipped) until exactly one cluster is produced, ending on a
//! frame boundary; compressed bytes after that are ignored, and a stream that ends first, or
//! runs past the cluster, or does not decode, is [`Error::Corrupt`]. Frames that need a
//! dictionary are [`Error::Unsupported`]. Compressed bytes are read from the file in steps of
//! up to one block (128 KiB) into the decoder's input buffer.

use crate::codec::zstd::ZstdError;
use crate::error::{Error, Result};
use crate::io::child_io;
use crate::io::Io;
use crate::node::NodeId;

use super::Qcow2;

impl Qcow2 {
    // The decoder's buffers stay borrowed across the reads that fill them: the decoder is taken
    // from the pool exclusively first (`take_zstd`), and `try_borrow_mut` fails, not panics.
    #[allow(clippy::await_holding_refcell_ref)] // reason: exclusive by the pool's busy flag
    /// Decodes the zstd cluster of `csize` bytes at `host` in `file` and copies its bytes
    /// `[skip, skip + out.len())` to `out` (straight into `out` when that is the whole cluster).
    pub(crate) async fn read_zstd(
        &self,
        io: &Io<'_, '_>,
        file: NodeId,
        host: u64,
        csize: u64,
        skip: u64,
        out: &mut [u8],
    ) -> Result<()> {
        let cs = self.cluster_size() as usize;
        let taken = io.meta.take_zstd().await?;
        let z = taken.0;
        let (Ok(mut decoder), Ok(mut input), Ok(mut window)) = (
            z.decoder.try_borrow_mut(),
            z.input.try_borrow_mut(),
            z.window.try_borrow_mut(),
        ) else {
            return Err(Error::BadGraph("decompressor busy"));
        };
        let whole = skip == 0 && out.len() == cs;
        let dst: &mut [u8] = if whole {
            &mut *out
        } else {
            window
                .as_deref_mut()
                .and_then(|w| w.get_mut(..cs))
                .ok_or(Error::NoSpace {
                    what: "zstd window smaller than the cluster (ZstdDecoder::set_window)",
                })?
        };
        let corrupt = |e: ZstdError| match e {
            ZstdError::Corrupt(what) => Error::Corrupt { what, offset: host },
            ZstdError::Dictionary => Error::Unsupported("zstd frame with a dictionary"),
            _ => Error::Corrupt {
                what: "compressed cluster data ends before a whole cluster",
                offset: host,
            },
        };
        decoder.reset();
        let (mut pos, mut fetched) = (0usize, 0u64);
        let (mut start, mut end) = (0usize, 0usize);
        while pos < cs || !decoder.between_frames() {
            let need = decoder.need();
            if end - start < need && fetched < csize {
                input.copy_within(start..end, 0);
                end -= start;
                start = 0;
                let n = (csize - fetched).min((input.len() - end) as u64) as usize;
                child_io::read_upto(io, file, host + fetched, &mut input[end..end + n]).await?;
                fetched += n as u64;
                end += n;
            }
            start += decoder
                .step(&input[start..end], dst, &mut pos)
                .map_err(corrupt)?;
        }
        if !whole {
            let from = skip as usize;
            let w = window.as_deref().unwrap_or(&[]);
            out.copy_from_slice(&w[from..from + out.len()]);
        }
        Ok(())
    }
}
