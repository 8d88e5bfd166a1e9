//! What every device-tree board reads first: the kernel command line (`/chosen` `bootargs`),
//! the RAM regions (`/memory` nodes' `reg`) and the virtio-mmio windows.

use super::{Fdt, Node};
use crate::common::{MemoryRegion, MmioWindows};

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

/// The first `reg` window of each `virtio,mmio` node among `nodes`, in order, as many as
/// [`MmioWindows`] holds.
pub fn virtio_mmio_windows<'a>(nodes: impl Iterator<Item = Node<'a>>) -> MmioWindows {
    let mut windows = MmioWindows::new();
    for node in nodes.filter(|n| n.is_compatible("virtio,mmio")) {
        if let Some((base, size)) = node.reg().next() {
            if !windows.push(base, size) {
                break;
            }
        }
    }
    windows
}
