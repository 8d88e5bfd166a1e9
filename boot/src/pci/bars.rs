//! BAR assignment without firmware and without a heap: every function on the host bridge's
//! first bus has each BAR sized (all ones written, the mask read back: PCI Local Bus 3.0,
//! 6.2.5.1), the requests are placed largest first at naturally aligned addresses in the
//! bridge's windows, and a function whose BARs all found room gets them with memory (and I/O)
//! decoding and bus mastering on. A function that does not fit, or reports a BAR no device can
//! have (a mask with holes, a 64-bit BAR in the last slot, a reserved type), keeps every BAR
//! at 0 with decoding off, so nothing answers at an address the allocator did not give out.
//!
//! Placement: a 64-bit memory BAR goes in a 64-bit window the CPU can reach (`mapped`), else
//! below 4 GiB; a 32-bit one below 4 GiB only; a non-prefetchable one never in a prefetchable
//! window. Memory windows are used only where PCI and CPU addresses are equal, since drivers
//! (virtio-drivers' PCI transport) use a BAR's value as the physical address. I/O BARs start at
//! 0x1000 of I/O space.
//!
//! Functions behind PCI-PCI bridges are not reached (no bus numbers are given out); the
//! summary counts the bridges seen. QEMU's `virt` puts every `-device` on bus 0 unless a
//! `pcie-root-port` is named.

use super::host_bridge::{HostBridge, Space, MAX_WINDOWS};
use super::{command, ConfigSpace};

/// Most functions on the bus that get BARs; more are counted in [`Summary::ignored`].
pub const MAX_FUNCTIONS: usize = 32;

const BARS: usize = 6;
const BAR0: u16 = 0x10;
const COMMAND: u16 = 0x04;
const HEADER: u16 = 0x0c;
/// The lowest I/O address given out (below it lie legacy ISA ports on PCs).
const IO_START: u64 = 0x1000;
const FOUR_GIB: u64 = 1 << 32;

/// What [`assign`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Type-0 functions found on the bus (up to [`MAX_FUNCTIONS`]).
    pub functions: u16,
    /// Functions whose BARs were all placed, decoding on.
    pub assigned: u16,
    /// Functions left with BARs at 0 and decoding off: no room, or a BAR no device can have.
    pub unassigned: u16,
    /// PCI-PCI and CardBus bridges seen (not configured: nothing behind them is reached).
    pub bridges: u16,
    /// Functions past [`MAX_FUNCTIONS`], untouched.
    pub ignored: u16,
    /// BARs placed.
    pub bars: u16,
}

/// The kind of a BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Io,
    Mem32,
    Mem64,
}

#[derive(Clone, Copy, Debug)]
struct Function {
    device: u8,
    function: u8,
    failed: bool,
}

#[derive(Clone, Copy, Debug)]
struct Request {
    /// Index into the function table.
    owner: u8,
    bar: u8,
    kind: Kind,
    prefetchable: bool,
    size: u64,
    address: Option<u64>,
}

/// One function's address in configuration space.
#[derive(Clone, Copy)]
struct At<'c, C: ConfigSpace> {
    cs: &'c C,
    bus: u8,
    device: u8,
    function: u8,
}

impl<C: ConfigSpace> At<'_, C> {
    fn read(&self, offset: u16) -> u32 {
        self.cs.read(self.bus, self.device, self.function, offset)
    }

    fn write(&self, offset: u16, value: u32) {
        self.cs
            .write(self.bus, self.device, self.function, offset, value)
    }

    fn present(&self) -> bool {
        self.read(0) & 0xffff != 0xffff
    }

    fn header_type(&self) -> u8 {
        (self.read(HEADER) >> 16) as u8
    }

    /// Sets the command register's low 16 bits (status, above, is write-one-to-clear: 0 keeps it).
    fn set_command(&self, bits: u16) {
        self.write(COMMAND, u32::from(bits));
    }

    fn command(&self) -> u16 {
        self.read(COMMAND) as u16
    }
}

/// A BAR's kind, prefetchability, size, and slots used (2 for 64-bit); `Ok(None)` if
/// unimplemented, `Err` for a BAR no device can have.
fn size_bar<C: ConfigSpace>(
    at: &At<'_, C>,
    bar: usize,
) -> Result<Option<(Kind, bool, u64, usize)>, ()> {
    let offset = BAR0 + 4 * bar as u16;
    at.write(offset, u32::MAX);
    let low = at.read(offset);
    if low == 0 {
        return Ok(None);
    }
    let (kind, prefetchable, size, slots) = if low & 1 == 1 {
        // I/O: bits 2..31 address; devices may implement only the low 16.
        let mut mask = low & !0x3;
        if mask >> 16 == 0 {
            mask |= 0xffff_0000;
        }
        (Kind::Io, false, u64::from((!mask).wrapping_add(1)), 1)
    } else {
        let prefetchable = low & 0x8 != 0;
        match (low >> 1) & 0x3 {
            0 => (
                Kind::Mem32,
                prefetchable,
                u64::from((!(low & !0xf)).wrapping_add(1)),
                1,
            ),
            2 if bar + 1 < BARS => {
                at.write(offset + 4, u32::MAX);
                let high = at.read(offset + 4);
                let mask = u64::from(high) << 32 | u64::from(low & !0xf);
                (Kind::Mem64, prefetchable, (!mask).wrapping_add(1), 2)
            }
            _ => return Err(()),
        }
    };
    if !size.is_power_of_two() {
        return Err(());
    }
    Ok(Some((kind, prefetchable, size, slots)))
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

/// Places `req` in a window, moving that window's cursor; none if nothing has room.
fn place(
    bridge: &HostBridge,
    cursors: &mut [u64; MAX_WINDOWS],
    req: &Request,
    mapped: &impl Fn(u64, u64) -> bool,
) -> Option<u64> {
    // Passes in order of preference: a 64-bit BAR tries the 64-bit windows first.
    let passes: &[Space] = match req.kind {
        Kind::Io => &[Space::Io],
        Kind::Mem32 => &[Space::Mem32],
        Kind::Mem64 => &[Space::Mem64, Space::Mem32],
    };
    for &space in passes {
        for (i, w) in bridge.windows().enumerate() {
            let Some(cursor) = cursors.get_mut(i) else {
                continue;
            };
            if w.space != space || (w.prefetchable && !req.prefetchable) {
                continue;
            }
            let is_memory = space != Space::Io;
            if is_memory && w.cpu_base != w.pci_base {
                continue;
            }
            let floor = if is_memory {
                w.pci_base
            } else {
                w.pci_base.max(IO_START)
            };
            let Some(start) = align_up((*cursor).max(floor), req.size) else {
                continue;
            };
            let Some(end) = start.checked_add(req.size) else {
                continue;
            };
            let window_end = w.pci_base.saturating_add(w.size);
            if end > window_end || (req.kind != Kind::Mem64 && end > FOUR_GIB) {
                continue;
            }
            if is_memory && !mapped(start, req.size) {
                continue;
            }
            *cursor = end;
            return Some(start);
        }
    }
    None
}

/// Sizes and places the BARs of every function on `bridge`'s first bus through `cs`, and turns
/// on decoding and bus mastering for those that fit. `mapped(addr, size)` says whether the CPU
/// can reach a memory range (identity-mapped).
pub fn assign<C: ConfigSpace>(
    cs: &C,
    bridge: &HostBridge,
    mapped: impl Fn(u64, u64) -> bool,
) -> Summary {
    let mut summary = Summary::default();
    let mut functions = [Function {
        device: 0,
        function: 0,
        failed: false,
    }; MAX_FUNCTIONS];
    let mut nfunctions = 0;
    let mut requests = [Request {
        owner: 0,
        bar: 0,
        kind: Kind::Io,
        prefetchable: false,
        size: 0,
        address: None,
    }; MAX_FUNCTIONS * BARS];
    let mut nrequests = 0;
    let bus = bridge.bus_start;

    for device in 0..32u8 {
        let first = At {
            cs,
            bus,
            device,
            function: 0,
        };
        if !first.present() {
            continue;
        }
        let count = if first.header_type() & 0x80 != 0 {
            8
        } else {
            1
        };
        for function in 0..count {
            let at = At {
                cs,
                bus,
                device,
                function,
            };
            if !at.present() {
                continue;
            }
            if at.header_type() & 0x7f != 0 {
                summary.bridges += 1;
                continue;
            }
            if nfunctions == MAX_FUNCTIONS {
                summary.ignored += 1;
                continue;
            }
            let owner = nfunctions;
            nfunctions += 1;
            summary.functions += 1;
            let mut f = Function {
                device,
                function,
                failed: false,
            };
            at.set_command(at.command() & !(command::IO_SPACE | command::MEMORY_SPACE));
            let mut bar = 0;
            while bar < BARS {
                match size_bar(&at, bar) {
                    Ok(None) => bar += 1,
                    Ok(Some((kind, prefetchable, size, slots))) => {
                        if let Some(r) = requests.get_mut(nrequests) {
                            *r = Request {
                                owner: owner as u8,
                                bar: bar as u8,
                                kind,
                                prefetchable,
                                size,
                                address: None,
                            };
                            nrequests += 1;
                        }
                        bar += slots;
                    }
                    Err(()) => {
                        f.failed = true;
                        break;
                    }
                }
            }
            functions[owner] = f;
        }
    }

    // Largest first: with natural alignment, each lands right after the previous one.
    let requests = &mut requests[..nrequests];
    requests.sort_unstable_by_key(|r| core::cmp::Reverse(r.size));
    let mut cursors = [0u64; MAX_WINDOWS];
    for req in requests.iter_mut() {
        let owner = &mut functions[usize::from(req.owner)];
        if owner.failed {
            continue;
        }
        req.address = place(bridge, &mut cursors, req, &mapped);
        if req.address.is_none() {
            owner.failed = true;
        }
    }

    for (index, f) in functions[..nfunctions].iter().enumerate() {
        let at = At {
            cs,
            bus,
            device: f.device,
            function: f.function,
        };
        if f.failed {
            for bar in 0..BARS {
                at.write(BAR0 + 4 * bar as u16, 0);
            }
            summary.unassigned += 1;
            continue;
        }
        let mut bits = command::BUS_MASTER;
        for req in requests.iter().filter(|r| usize::from(r.owner) == index) {
            let Some(address) = req.address else { continue };
            let offset = BAR0 + 4 * u16::from(req.bar);
            at.write(offset, address as u32);
            if req.kind == Kind::Mem64 {
                at.write(offset + 4, (address >> 32) as u32);
            }
            bits |= if req.kind == Kind::Io {
                command::IO_SPACE
            } else {
                command::MEMORY_SPACE
            };
            summary.bars += 1;
        }
        at.set_command(at.command() | bits);
        summary.assigned += 1;
    }
    summary
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests;
