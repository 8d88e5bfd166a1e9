//! The source alignment `img convert` keeps its pieces to. The extent walk itself (data copied;
//! zero clusters, ranges no layer allocates and holes of host files left out) moved into
//! `strata_block::cmd::copy`, which `convert_copy` drives.

use super::image::Image;

/// The source alignment qemu-img convert keeps pieces to: the top node's cluster size for a
/// qcow2, else 512 bytes (`src_alignment`: request alignment, at least the cluster size).
pub fn alignment(img: &Image<'_, '_>) -> u64 {
    let graph = img.backend.graph();
    let cluster = graph
        .state(img.root())
        .ok()
        .flatten()
        .and_then(|s| s.qcow2().map(|q| q.cluster_size()));
    cluster.unwrap_or(512).max(512)
}
