//! Throttling (QEMU's `util/throttle.c` and `block/throttle-groups.c`): named groups of limits
//! that the graph owns and `throttle` nodes join. [`config`] parses and checks the limits,
//! [`bucket`] is the leaky-bucket arithmetic, [`group`] holds requests in order and serves a
//! group's members round-robin.

pub mod bucket;
pub mod config;
pub mod group;

pub use bucket::Direction;
pub use config::ThrottleConfig;
pub use group::ThrottleGroup;

use crate::error::{Error, Result};
use crate::options::Options;

/// Most throttle groups a graph holds.
pub const MAX_GROUPS: usize = 8;

/// Parses a `throttle-group` object as qemu-img's `--object` takes it
/// (`throttle-group,id=G,limits.iops-total=…`) into a group.
pub fn parse_object(text: &str) -> Result<ThrottleGroup> {
    let opts: Options<'_, 32> = Options::parse(text, Some("qom-type"))?;
    opts.check_only(&["qom-type", "id", "limits"])?;
    match opts.get("qom-type") {
        Some(t) if t.eq_str("throttle-group") => {}
        _ => return Err(Error::BadOption { key: "qom-type", why: "only throttle-group objects are known" }),
    }
    let id = opts.get("id").ok_or(Error::BadOption { key: "id", why: "a throttle-group needs an id" })?;
    let mut name = [0u8; group::MAX_NAME];
    let name = id.unescape_into(&mut name).map_err(|_| Error::BadOption { key: "id", why: "a throttle group name must be 1 to 32 bytes" })?;
    ThrottleGroup::new(name, ThrottleConfig::parse(&opts.root())?)
}
