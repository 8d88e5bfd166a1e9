//! Compressed clusters in a build without the `compress` feature: the deflate and zstd
//! decoders are left out, and reading such a cluster is a typed error (the rest of the image
//! reads as usual).

use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::NodeId;

use super::Qcow2;

/// What a read of a compressed cluster fails with.
pub const NO_COMPRESS: Error = Error::Unsupported("compressed clusters (strata-block built without the `compress` feature)");

impl Qcow2 {
    /// Always fails: see the module docs.
    pub(crate) async fn read_compressed(&self, _io: &Io<'_, '_>, _node: NodeId, _host: u64, _csize: u64, _skip: u64, _out: &mut [u8]) -> Result<()> {
        Err(NO_COMPRESS)
    }
}
