//! The errno texts qemu-io prints (`strerror` on Linux) for errors that carry an errno: the
//! ones `blkdebug` rules inject ([`crate::Error::Injected`]) and the breakpoint commands return.

/// Linux's `strerror(errno)` for the errnos QEMU's tests name; `None` for others (qemu-io would
/// print `Unknown error N` for unassigned ones).
pub fn strerror(errno: i32) -> Option<&'static str> {
    Some(match errno {
        1 => "Operation not permitted",
        2 => "No such file or directory",
        4 => "Interrupted system call",
        5 => "Input/output error",
        6 => "No such device or address",
        7 => "Argument list too long",
        9 => "Bad file descriptor",
        11 => "Resource temporarily unavailable",
        12 => "Cannot allocate memory",
        13 => "Permission denied",
        14 => "Bad address",
        16 => "Device or resource busy",
        17 => "File exists",
        19 => "No such device",
        22 => "Invalid argument",
        24 => "Too many open files",
        27 => "File too large",
        28 => "No space left on device",
        30 => "Read-only file system",
        32 => "Broken pipe",
        34 => "Numerical result out of range",
        61 => "No data available",
        75 => "Value too large for defined data type",
        95 => "Operation not supported",
        110 => "Connection timed out",
        122 => "Disk quota exceeded",
        125 => "Operation canceled",
        _ => return None,
    })
}
