//! Where a qcow2 image really ends: the end of its last cluster with a nonzero refcount, read
//! through the block layer (the runner cuts a file back to it after a boot; `img resize`
//! truncates a shrunk image's file to it, as QEMU does).

use std::path::Path;

use strata_block::driver::qcow2::header::incompat;
use strata_block::graph::Role;

use super::image::{self, block_on};
use super::ImgError;

/// The end of the last cluster of the qcow2 image `path` (a file of `len` bytes) with a nonzero
/// refcount, looking no lower than `floor`; `floor` if no cluster at or above it is in use.
pub fn image_end(path: &Path, floor: u64, len: u64) -> Result<u64, String> {
    let opts = image::OpenOptions {
        read_only: true,
        no_backing: true,
        format: Some("qcow2".into()),
        cache_bytes: Some(1 << 20),
        // Shares every permission: the caller holds the write lock while it reads.
        force_share: true,
        ..image::OpenOptions::default()
    };
    let spec = path.to_str().ok_or("the path is not UTF-8")?;
    image::with_image(spec, &opts, |img| {
        let graph = img.backend.graph();
        let node = graph.node(img.root()).map_err(|e| ImgError::failed(e.to_string()))?;
        let (Some(q), Some(file)) = (
            graph.state(img.root()).ok().flatten().and_then(|s| s.qcow2()),
            node.child(Role::File),
        ) else {
            return Err(ImgError::failed("not a qcow2 image".into()));
        };
        if q.header().incompatible & (incompat::DIRTY | incompat::CORRUPT) != 0 {
            return Err(ImgError::failed("the image is marked dirty or corrupt, so its refcounts cannot say where it ends".into()));
        }
        let cs = q.cluster_size();
        let lowest = floor / cs;
        let mut cluster = len.div_ceil(cs);
        while cluster > lowest {
            let at = (cluster - 1) * cs;
            let refcount = block_on(q.refcount(&graph.io(), file, at)).map_err(|e| ImgError::failed(format!("refcount of the cluster at {at}: {e}")))?;
            if refcount != 0 {
                return Ok(cluster * cs);
            }
            cluster -= 1;
        }
        Ok(floor)
    })
    .map_err(|e| e.to_string())
}
