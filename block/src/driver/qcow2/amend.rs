//! Changing a qcow2 image's options in place (QEMU's `qcow2_amend_options`): what Strata can
//! amend so far is `lazy_refcounts`. Turning it off on a dirty image makes the refcounts exact
//! first (everything written back and made stable, the dirty bit cleared: QEMU's
//! `qcow2_mark_clean`), then clears the compatible bit in one header write.
//!
//! The structural changes work on the image file alone, with no qcow2 node open (as the
//! check does), in caller-given memory: [`refcount_width`] (QEMU's
//! `qcow2_change_refcount_order`) and [`version`] (`qcow2_upgrade`, `qcow2_downgrade` with
//! [`zero_expand`]); [`header_rewrite`] writes the header of the other version.

mod header_rewrite;
pub mod refcount_width;
pub mod version;
mod zero_expand;

use crate::error::{Error, Result};
use crate::io::{flush, Io};
use crate::node::NodeId;

use super::header::compat;
use super::Qcow2;

/// The compatible-features header field (u64).
const COMPATIBLE: u64 = 80;

impl Qcow2 {
    /// Sets or clears the lazy-refcounts bit of read-write qcow2 node `node` (version 3 only).
    /// The caller has drained the node; the node keeps the refcount mode it opened with until
    /// it is closed (a clean close leaves the image clean either way).
    pub async fn set_lazy_refcounts(&self, io: &Io<'_, '_>, node: NodeId, on: bool) -> Result<()> {
        self.check_writable()?;
        if on && self.header().version < 3 {
            return Err(Error::Unsupported("lazy refcounts need compat=1.1"));
        }
        let file = Self::file(io, node)?;
        let bits = self.header().compatible;
        let new = if on { bits | compat::LAZY_REFCOUNTS } else { bits & !compat::LAZY_REFCOUNTS };
        if new == bits {
            return Ok(());
        }
        if !on {
            // As a clean close: the frees applied, then their refcounts written, then clean
            // (a no-op on an image that is not dirty).
            self.flush_caches(io, node).await?;
            self.flush_caches(io, node).await?;
            self.mark_clean(io, file).await?;
        }
        self.write_header_u64(io, file, COMPATIBLE, new).await?;
        flush::flush_leaves(io, file).await
    }
}
