//! What every device-tree board reads first: the kernel command line (`/chosen` `bootargs`) and
//! the RAM regions (`/memory` nodes' `reg`).

use super::Fdt;
use crate::common::MemoryRegion;

impl<'a> Fdt<'a> {
    /// `/chosen` `bootargs`; empty if absent.
    pub fn bootargs(&self) -> &'a str {
        self.top_node("chosen")
            .and_then(|n| n.str_prop("bootargs"))
            .unwrap_or("")
    }

    /// The first `max` RAM regions of the `/memory` nodes (`device_type = "memory"`).
    pub fn memory_regions(&self, max: usize) -> impl Iterator<Item = MemoryRegion> + 'a {
        self.top_nodes()
            .filter(|n| n.str_prop("device_type") == Some("memory"))
            .flat_map(|n| n.reg())
            .take(max)
            .map(|(addr, size)| MemoryRegion {
                addr,
                size,
                ram: true,
            })
    }
}
