//! The embedding example as a bare-metal image: [`strata_embed::run`] over two RAM disks
//! in `.bss`, linked for x86_64-unknown-none, aarch64-unknown-none and
//! riscv64gc-unknown-none-elf (`cargo build -p strata-embed --features firmware --release
//! --target TRIPLE`; with `--no-default-features --features firmware,read-only` it links
//! [`strata_embed::run_read_only`] and a strata-block without writes). What a real board adds, and this file leaves out: setting up a stack
//! before `_start`, loading the images into the disks (or a real device driver instead), and a
//! console to print the result. It exists to show that the glue links on each target, and what
//! it costs (`llvm-size`).

#![no_std]
#![no_main]
#![allow(unsafe_code)] // reason: the entry point and the `.bss` disks shared with the loader

use core::cell::UnsafeCell;

use strata_embed::disk::SliceDisk;
use strata_embed::Memory;

/// A region the loader fills before `_start` and nothing else touches after.
struct Region<T>(UnsafeCell<T>);
// SAFETY: single-threaded firmware: only `_start` reaches the regions, once.
unsafe impl<T> Sync for Region<T> {}

static TOP: Region<[u8; 1 << 20]> = Region(UnsafeCell::new([0; 1 << 20]));
static BASE: Region<[u8; 1 << 20]> = Region(UnsafeCell::new([0; 1 << 20]));
static MEMORY: Region<Memory<{ 4 * strata_embed::BOUNCE }, 8>> = Region(UnsafeCell::new(Memory::new()));

/// The entry point (the board's boot code has set up a stack).
#[no_mangle]
pub extern "C" fn _start() -> ! {
    // SAFETY: `_start` runs once, so these are the only references to the regions.
    let (top, base, memory) = unsafe { (&mut *TOP.0.get(), &mut *BASE.0.get(), &mut *MEMORY.0.get()) };
    let (top, base) = (SliceDisk::new(top, "top"), SliceDisk::new(base, "base"));
    #[cfg(not(feature = "read-only"))]
    let seen = strata_embed::run(&top, &base, "base.raw", memory);
    #[cfg(feature = "read-only")]
    let seen = strata_embed::run_read_only(&top, &base, "base.raw", memory);
    // Keep the result observable so nothing is optimised away; a board would print it.
    core::hint::black_box(&seen);
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
