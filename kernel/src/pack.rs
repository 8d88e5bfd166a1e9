//! Files packed into one disk. A backing chain deeper than the machine has device slots (24
//! virtio-mmio slots on microvm) reaches the guest as one read-only disk holding all its
//! read-only files at aligned offsets (`qemu-runner boot` writes it), and a `--map` per file
//! whose target names the file's window of that disk instead of a device of its own:
//! `--map NAME=SERIAL@OFFSET+SIZE`, offset and size in hexadecimal bytes. The resolver
//! ([`crate::stack`]) hands the disk to the block layer with the window, which opens the file as
//! a read-only `raw` node with that offset and size over the disk.

/// The device serial a `--map` target names: `SERIAL` of `SERIAL@OFFSET+SIZE`, or the whole
/// target.
pub fn serial_of(target: &str) -> &str {
    target.split_once('@').map_or(target, |(serial, _)| serial)
}

/// True if a `--map` target names a window (it has an `@`).
pub fn is_window(target: &str) -> bool {
    target.contains('@')
}

/// The window `(offset, size)` a `--map` target `SERIAL@OFFSET+SIZE` names; `None` if it names
/// none or is malformed (an empty window, numbers that are not hexadecimal or overflow).
pub fn window_of(target: &str) -> Option<(u64, u64)> {
    let (_, window) = target.split_once('@')?;
    let (offset, size) = window.split_once('+')?;
    let offset = u64::from_str_radix(offset, 16).ok()?;
    let size = u64::from_str_radix(size, 16).ok()?;
    (size > 0 && offset.checked_add(size).is_some()).then_some((offset, size))
}
