//! What `img convert` copies, extent by extent, as qemu-img's `convert_iteration_sectors` decides
//! it from block status: data (plain, compressed) is read and copied; zero clusters, ranges no
//! layer allocates, and holes of the host file under a data extent read as zeros and are left
//! out, so they stay holes in a new sparse output.

use strata_block::path::{block_status, ExtentKind};

use super::holes::HostFiles;
use super::image::Image;
use super::ImgError;

/// Most bytes asked for per block-status call (a qcow2 answers at most one L2 table's span,
/// so an unallocated L1 entry is passed in one call).
const STEP: u64 = 1 << 40;

/// One piece of the image from some offset on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Data: read and copy this many bytes.
    Copy(u64),
    /// Zeros: leave this many bytes out.
    Skip(u64),
}

/// The source alignment qemu-img convert keeps pieces to: the top node's cluster size for a
/// qcow2, else 512 bytes (`src_alignment`: request alignment, at least the cluster size).
pub fn alignment(img: &Image<'_, '_>) -> u64 {
    let graph = img.backend.graph();
    let cluster = graph.state(img.root()).ok().flatten().and_then(|s| s.qcow2().map(|q| q.cluster_size()));
    cluster.unwrap_or(512).max(512)
}

/// The piece of `img` at `pos`, at most `len` bytes (`len` > 0; the length returned is at
/// least 1). A piece longer than its unaligned tail ends at a multiple of `align` (as
/// qemu-img's pieces do, so `-p` draws the same steps). Reads metadata only (and asks the host
/// where its files have holes).
pub async fn next(img: &Image<'_, '_>, files: &mut HostFiles<'_, '_, '_>, pos: u64, len: u64, align: u64) -> Result<Piece, ImgError> {
    let piece = piece(img, files, pos, len).await?;
    let trim = |n: u64| {
        let tail = (pos + n) % align.max(1);
        if n > tail {
            n - tail
        } else {
            n
        }
    };
    Ok(match piece {
        Piece::Copy(n) => Piece::Copy(trim(n)),
        Piece::Skip(n) => Piece::Skip(trim(n)),
    })
}

/// [`next`] before alignment.
async fn piece(img: &Image<'_, '_>, files: &mut HostFiles<'_, '_, '_>, pos: u64, len: u64) -> Result<Piece, ImgError> {
    let graph = img.backend.graph();
    let ext = block_status(&graph.stack(), img.root(), pos, len.min(STEP))
        .await
        .map_err(|e| ImgError::failed(format!("error while reading block status at offset {pos}: {e}")))?;
    let n = ext.len.clamp(1, len);
    Ok(match ext.kind {
        ExtentKind::Zero | ExtentKind::Hole => Piece::Skip(n),
        ExtentKind::Compressed | ExtentKind::Sink => Piece::Copy(n),
        ExtentKind::Data { leaf, offset, .. } => {
            let path = graph.node(leaf).ok().and_then(|node| node.device()).and_then(|d| files.path(d));
            match path {
                Some(p) => match files.hole(&p, offset, n) {
                    (true, h) => Piece::Skip(h.clamp(1, n)),
                    (false, d) => Piece::Copy(d.clamp(1, n)),
                },
                None => Piece::Copy(n),
            }
        }
    })
}
