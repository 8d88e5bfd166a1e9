//! Host tests of BAR assignment against a fake configuration space whose BARs behave as
//! QEMU's do (writable address bits, read-only type bits), including devices no real one
//! resembles.

extern crate std;

use core::cell::RefCell;
use std::vec::Vec;

use super::*;
use crate::pci::host_bridge::Props;

/// One BAR register: read-only flag bits and writable address bits.
#[derive(Clone, Copy, Default)]
struct Reg {
    ro: u32,
    rw: u32,
    value: u32,
}

#[derive(Clone, Copy, Default)]
struct FakeFn {
    present: bool,
    header_type: u8,
    command: u16,
    bars: [Reg; 6],
}

/// 32 devices x 8 functions on bus 0.
struct Fake(RefCell<[[FakeFn; 8]; 32]>);

impl ConfigSpace for Fake {
    fn read(&self, bus: u8, device: u8, function: u8, offset: u16) -> u32 {
        let space = self.0.borrow();
        let Some(f) = space
            .get(usize::from(device))
            .and_then(|d| d.get(usize::from(function)))
        else {
            return u32::MAX;
        };
        if bus != 0 || !f.present {
            return u32::MAX;
        }
        match offset & !3 {
            0 => 0x1001_1af4,
            4 => u32::from(f.command),
            0xc => u32::from(f.header_type) << 16,
            o @ 0x10..=0x24 => {
                let r = f.bars[usize::from((o - 0x10) / 4)];
                (r.value & r.rw) | r.ro
            }
            _ => 0,
        }
    }

    fn write(&self, bus: u8, device: u8, function: u8, offset: u16, value: u32) {
        let mut space = self.0.borrow_mut();
        let Some(f) = space
            .get_mut(usize::from(device))
            .and_then(|d| d.get_mut(usize::from(function)))
        else {
            return;
        };
        if bus != 0 || !f.present {
            return;
        }
        match offset & !3 {
            4 => f.command = value as u16,
            o @ 0x10..=0x24 => f.bars[usize::from((o - 0x10) / 4)].value = value,
            _ => {}
        }
    }
}

/// virtio-blk-pci as QEMU builds it (transitional): I/O BAR0 of 128 bytes, BAR1 4 KiB of
/// MSI-X, BAR4 16 KiB 64-bit prefetchable.
fn virtio() -> FakeFn {
    let mut f = FakeFn {
        present: true,
        ..FakeFn::default()
    };
    f.bars[0] = Reg {
        ro: 1,
        rw: 0xffff_ff80,
        value: 0,
    };
    f.bars[1] = Reg {
        ro: 0,
        rw: 0xffff_f000,
        value: 0,
    };
    f.bars[4] = Reg {
        ro: 0xc,
        rw: 0xffff_c000,
        value: 0,
    };
    f.bars[5] = Reg {
        ro: 0,
        rw: 0xffff_ffff,
        value: 0,
    };
    f
}

/// A bus with the host bridge at 0 (no BARs), virtio-blk at 1 and 2, a two-function device at
/// 3 and a PCI-PCI bridge at 4.
fn bus() -> Fake {
    let mut space = [[FakeFn::default(); 8]; 32];
    space[0][0] = FakeFn {
        present: true,
        ..FakeFn::default()
    };
    space[1][0] = virtio();
    space[2][0] = virtio();
    space[3][0] = FakeFn {
        header_type: 0x80,
        ..virtio()
    };
    space[3][1] = virtio();
    space[4][0] = FakeFn {
        present: true,
        header_type: 1,
        ..FakeFn::default()
    };
    Fake(RefCell::new(space))
}

fn bridge(mem32: u32) -> HostBridge {
    let words = [
        0x0100_0000,
        0,
        0,
        0,
        0x3eff_0000,
        0,
        0x1_0000, //
        0x0200_0000,
        0,
        0x1000_0000,
        0,
        0x1000_0000,
        0,
        mem32, //
        0x0300_0000,
        0x80,
        0,
        0x80,
        0,
        0x80,
        0,
    ];
    let ranges: Vec<u8> = words.iter().flat_map(|w: &u32| w.to_be_bytes()).collect();
    let reg: Vec<u8> = [0x40u32, 0x1000_0000, 0, 0x1000_0000]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    HostBridge::from_props(&Props {
        reg: &reg,
        ranges: &ranges,
        bus_range: None,
        parent_address_cells: 2,
        parent_size_cells: 2,
        address_cells: 3,
        size_cells: 2,
    })
    .unwrap()
}

/// Below 4 GiB, as aarch64's boot tables map (the 64-bit window at 512 GiB is out of reach).
fn low(addr: u64, size: u64) -> bool {
    addr.checked_add(size).is_some_and(|e| e <= 1 << 32)
}

/// Every placed BAR of the fake as (device, function, bar, kind is I/O, address, size).
fn placed(fake: &Fake) -> Vec<(usize, usize, usize, bool, u64, u64)> {
    let mut out = Vec::new();
    let space = fake.0.borrow();
    for (d, dev) in space.iter().enumerate() {
        for (f, func) in dev.iter().enumerate() {
            let mut i = 0;
            while i < 6 {
                let r = func.bars[i];
                let io = r.ro & 1 == 1;
                let wide = !io && (r.ro >> 1) & 3 == 2 && i < 5;
                let mut addr = u64::from((r.value & r.rw) & if io { !3 } else { !0xf });
                if wide {
                    addr |= u64::from(func.bars[i + 1].value & func.bars[i + 1].rw) << 32;
                }
                if r.rw != 0 && addr != 0 {
                    let mask = if wide {
                        u64::from(func.bars[i + 1].rw) << 32 | u64::from(r.rw)
                    } else {
                        u64::from(r.rw) | 0xffff_ffff_0000_0000
                    };
                    out.push((d, f, i, io, addr, (!mask).wrapping_add(1)));
                }
                i += if wide { 2 } else { 1 };
            }
        }
    }
    out
}

fn no_overlaps(bars: &[(usize, usize, usize, bool, u64, u64)]) {
    for (i, a) in bars.iter().enumerate() {
        assert_eq!(a.4 % a.5, 0, "{a:x?} not naturally aligned");
        for b in &bars[i + 1..] {
            if a.3 == b.3 {
                assert!(
                    a.4 + a.5 <= b.4 || b.4 + b.5 <= a.4,
                    "{a:x?} overlaps {b:x?}"
                );
            }
        }
    }
}

#[test]
fn every_function_gets_aligned_disjoint_bars_in_reachable_windows() {
    let fake = bus();
    let s = assign(&fake, &bridge(0x2eff_0000), low);
    assert_eq!(
        s,
        Summary {
            functions: 5,
            assigned: 5,
            unassigned: 0,
            bridges: 1,
            ignored: 0,
            bars: 12
        }
    );
    let bars = placed(&fake);
    assert_eq!(bars.len(), 12, "{bars:x?}");
    no_overlaps(&bars);
    for &(_, _, _, io, addr, size) in &bars {
        if io {
            assert!(addr >= 0x1000 && addr + size <= 0x1_0000, "{addr:#x}");
        } else {
            assert!(
                addr >= 0x1000_0000 && addr + size <= 0x3eff_0000,
                "{addr:#x}: below 4 GiB, in the 32-bit window"
            );
        }
    }
    let space = fake.0.borrow();
    for (d, f) in [(1, 0), (2, 0), (3, 0), (3, 1)] {
        assert_eq!(
            space[d][f].command,
            command::IO_SPACE | command::MEMORY_SPACE | command::BUS_MASTER
        );
    }
    assert_eq!(
        space[0][0].command,
        command::BUS_MASTER,
        "no BARs: nothing to decode"
    );
    assert_eq!(space[4][0].command, 0, "the bridge is left alone");
}

#[test]
fn a_reachable_64_bit_window_takes_the_64_bit_bars() {
    let fake = bus();
    let s = assign(&fake, &bridge(0x2eff_0000), |_, _| true);
    assert_eq!(s.assigned, 5);
    let bars = placed(&fake);
    no_overlaps(&bars);
    for &(_, _, bar, io, addr, _) in &bars {
        match (io, bar) {
            (false, 4) => assert!(addr >= 0x80_0000_0000, "{addr:#x}"),
            (false, _) => assert!(addr < 1 << 32, "{addr:#x}"),
            _ => {}
        }
    }
}

#[test]
fn functions_that_do_not_fit_keep_zero_bars_and_no_decoding() {
    // 36 KiB of 32-bit window: room for two 16 KiB BARs and one 4 KiB one.
    let fake = bus();
    let s = assign(&fake, &bridge(0x9000), low);
    assert_eq!((s.functions, s.assigned + s.unassigned), (5, 5));
    assert_eq!(
        s.assigned, 2,
        "the bridge at 00:00.0 and one device fit: {s:?}"
    );
    let space = fake.0.borrow();
    for (d, f) in [(1, 0), (2, 0), (3, 0), (3, 1)] {
        let func = &space[d][f];
        let assigned = func.command & command::MEMORY_SPACE != 0;
        let zero = func.bars.iter().all(|r| r.value & r.rw == 0);
        assert!(
            assigned != zero,
            "{d}.{f}: assigned {assigned}, zero BARs {zero}"
        );
        if !assigned {
            assert_eq!(func.command & (command::IO_SPACE | command::BUS_MASTER), 0);
        }
    }
    drop(space);
    no_overlaps(&placed(&fake));
}

#[test]
fn impossible_bars_leave_the_function_off() {
    for bad in [
        // A mask with a hole.
        |f: &mut FakeFn| {
            f.bars[1] = Reg {
                ro: 0,
                rw: 0xff0f_f000,
                value: 0,
            }
        },
        // A 64-bit BAR in the last slot.
        |f: &mut FakeFn| {
            f.bars[5] = Reg {
                ro: 0x4,
                rw: 0xffff_f000,
                value: 0,
            }
        },
        // Reserved memory type.
        |f: &mut FakeFn| {
            f.bars[2] = Reg {
                ro: 0x6,
                rw: 0xffff_f000,
                value: 0,
            }
        },
        // Type bits but no address bits.
        |f: &mut FakeFn| {
            f.bars[2] = Reg {
                ro: 0x8,
                rw: 0,
                value: 0,
            }
        },
    ] {
        let fake = bus();
        bad(&mut fake.0.borrow_mut()[2][0]);
        let s = assign(&fake, &bridge(0x2eff_0000), low);
        assert_eq!((s.assigned, s.unassigned), (4, 1), "{s:?}");
        let space = fake.0.borrow();
        assert_eq!(space[2][0].command & command::MEMORY_SPACE, 0);
        assert!(space[2][0].bars.iter().all(|r| r.value & r.rw == 0));
        assert_ne!(space[1][0].command & command::MEMORY_SPACE, 0);
    }
}

#[test]
fn random_devices_never_panic_and_never_overlap() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let mut space = [[FakeFn::default(); 8]; 32];
        for dev in space.iter_mut().take(40) {
            for func in dev.iter_mut() {
                if next() % 3 != 0 {
                    continue;
                }
                func.present = true;
                func.header_type = (next() % 4) as u8 | if next() % 2 == 0 { 0x80 } else { 0 };
                for r in func.bars.iter_mut() {
                    let shift = next() % 32;
                    r.ro = (next() % 16) as u32;
                    r.rw = match next() % 4 {
                        0 => 0,
                        1 => next() as u32,
                        _ => (u32::MAX << shift) & !0xf,
                    };
                }
            }
        }
        let fake = Fake(RefCell::new(space));
        let reach = next();
        let s = assign(
            &fake,
            &bridge((next() % 0x2eff_0000) as u32 & !0xfff),
            |a, _| reach % 2 == 0 || a < 1 << 32,
        );
        assert_eq!(s.functions, s.assigned + s.unassigned);
        assert!(usize::from(s.functions) <= MAX_FUNCTIONS);
    }
}
