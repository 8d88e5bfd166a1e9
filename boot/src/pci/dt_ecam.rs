//! PCI on a device-tree board whose loader assigns nothing (aarch64 and riscv64 `virt` under
//! `-kernel`): the first request finds the generic ECAM host bridge in the accepted device
//! tree ([`HostBridge::find`]), places every BAR on its first bus ([`bars::assign`]) and
//! remembers the ECAM window; later requests return the same configuration access. Each board
//! keeps one [`EcamOnce`] and says what its CPU can reach.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::bars;
use super::ecam::Ecam;
use super::host_bridge::HostBridge;
use super::ConfigSpace;
use crate::fdt::Fdt;

/// PCI configuration access through the board's ECAM window.
#[derive(Clone, Copy, Debug)]
pub struct PciConfig(Ecam);

impl PciConfig {
    /// Reads the 32-bit word at `offset` (rounded down to 4) of a function's 4 KiB of
    /// configuration space; all ones outside the bridge's buses.
    pub fn read(&self, bus: u8, device: u8, function: u8, offset: u16) -> u32 {
        self.0.read(bus, device, function, offset)
    }

    /// Writes the 32-bit word at `offset` (rounded down to 4); ignored outside the bridge's
    /// buses.
    pub fn write(&self, bus: u8, device: u8, function: u8, offset: u16, value: u32) {
        self.0.write(bus, device, function, offset, value)
    }
}

const UNTRIED: u8 = 0;
const ABSENT: u8 = 1;
const READY: u8 = 2;

/// Whether the bridge has been set up, and its ECAM base and bus range once it has.
#[derive(Debug)]
pub struct EcamOnce {
    state: AtomicU8,
    base: AtomicU64,
    /// First bus << 8 | last bus.
    buses: AtomicU32,
}

impl Default for EcamOnce {
    fn default() -> Self {
        Self::new()
    }
}

impl EcamOnce {
    /// Not set up yet.
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(UNTRIED),
            base: AtomicU64::new(0),
            buses: AtomicU32::new(0),
        }
    }

    /// The configuration access, if `fdt` (asked on the first call only) has a generic ECAM
    /// host bridge whose ECAM window `mapped` says the CPU reaches. The first call assigns
    /// every BAR on the bridge's first bus, in windows `mapped` accepts, and enables the
    /// functions that fit; those that do not keep BARs at 0 and decoding off.
    ///
    /// # Safety
    /// `fdt` must give the device tree of the machine this runs on; `mapped(addr, size)` may
    /// say true only for ranges identity-mapped as device memory (or reached with paging
    /// off); nothing else may drive configuration space. One CPU.
    pub unsafe fn get<'a>(
        &self,
        fdt: impl FnOnce() -> Option<Fdt<'a>>,
        mapped: impl Fn(u64, u64) -> bool,
    ) -> Option<PciConfig> {
        match self.state.load(Ordering::Relaxed) {
            READY => Some(self.config()),
            ABSENT => None,
            _ => {
                // SAFETY: the caller's contract, passed on.
                let found = unsafe { self.setup(fdt(), mapped) };
                let state = if found { READY } else { ABSENT };
                self.state.store(state, Ordering::Relaxed);
                found.then(|| self.config())
            }
        }
    }

    fn config(&self) -> PciConfig {
        let buses = self.buses.load(Ordering::Relaxed);
        // SAFETY: READY is stored only after `setup` found the window in the device tree and
        // `mapped` (per `get`'s contract) said it is reachable; configuration space is driven
        // only through this type on one CPU.
        PciConfig(unsafe {
            Ecam::new(
                self.base.load(Ordering::Relaxed),
                (buses >> 8) as u8,
                buses as u8,
            )
        })
    }

    /// Finds the host bridge and assigns BARs; false without a usable one.
    ///
    /// # Safety
    /// As [`EcamOnce::get`].
    unsafe fn setup(&self, fdt: Option<Fdt<'_>>, mapped: impl Fn(u64, u64) -> bool) -> bool {
        let Some(bridge) = fdt.and_then(|fdt| HostBridge::find(&fdt).ok()) else {
            return false;
        };
        if !mapped(bridge.ecam_base, bridge.ecam_size) {
            return false;
        }
        // SAFETY: the window is the machine's host bridge's and reachable (the caller's
        // contract, checked just above); nothing else drives configuration space.
        let ecam = unsafe { Ecam::new(bridge.ecam_base, bridge.bus_start, bridge.bus_end) };
        bars::assign(&ecam, &bridge, mapped);
        self.base.store(bridge.ecam_base, Ordering::Relaxed);
        self.buses.store(
            u32::from(bridge.bus_start) << 8 | u32::from(bridge.bus_end),
            Ordering::Relaxed,
        );
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    #[test]
    fn no_tree_or_an_unreachable_ecam_is_none_and_stays_none() {
        let none = EcamOnce::new();
        // SAFETY: no tree: nothing is read or written.
        assert!(unsafe { none.get(|| None, |_, _| true) }.is_none());
        // SAFETY: as above; the first answer is kept, the tree not asked again.
        assert!(unsafe { none.get(|| panic!("asked twice"), |_, _| true) }.is_none());

        // riscv64 virt's tree has a bridge, but the board says its ECAM is out of reach:
        // configuration space is never touched.
        let blob = include_bytes!("testdata/riscv64-virt-qemu10.dtb");
        let unreachable = EcamOnce::new();
        let mut asked = None;
        let mapped = |addr: u64, size: u64| {
            assert_eq!(
                (addr, size),
                (0x3000_0000, 0x1000_0000),
                "only the ECAM is checked"
            );
            false
        };
        // SAFETY: `mapped` refuses the ECAM, so nothing is read or written.
        let got = unsafe {
            unreachable.get(
                || {
                    asked = Some(());
                    Fdt::parse(blob).ok()
                },
                mapped,
            )
        };
        assert!(got.is_none() && asked.is_some());
    }
}
