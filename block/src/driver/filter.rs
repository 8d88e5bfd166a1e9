//! What the filters (`throttle`, `copy-on-read`, `blkverify`, `blkdebug`) share: every byte is
//! at the same offset of the file child, so the walk passes them as it passes a raw window at
//! offset 0, and what each adds (holding, copying, comparing, failing) hooks in elsewhere.

use super::{DriverCaps, Mapping};
use crate::node::{Pass, Role};

/// A filter's capabilities: over a file child, writable, translation only.
pub const CAPS: DriverCaps = DriverCaps::FORMAT.union(DriverCaps::WRITE).union(DriverCaps::TRANSLATION_ONLY);

/// Where a filter's bytes are: its file child, at the same offset.
pub const PASS: Pass = Pass { role: Role::File, offset: 0 };

/// A filter's mapping of `len` bytes at `offset`: the same bytes of its file child.
pub fn map(offset: u64, len: u64) -> Mapping {
    Mapping::Data { role: Role::File, offset, len, writable: true }
}
