//! Permissions on nodes (QEMU's `BLK_PERM_*`): what a user or parent takes, and what it lets
//! others take at the same time. Checked whenever a user or child is attached.

bitflags::bitflags! {
    /// A set of permissions.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct Perm: u8 {
        /// Reads see consistent data (nobody changes it underneath without the node knowing).
        const CONSISTENT_READ = 1 << 0;
        /// May change the visible data.
        const WRITE = 1 << 1;
        /// May write data that does not change what is visible (a copy-on-read, a mirror).
        const WRITE_UNCHANGED = 1 << 2;
        /// May change the size.
        const RESIZE = 1 << 3;
    }
}

/// The permissions one user or parent holds on a node, and those it shares with others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Taken.
    pub perm: Perm,
    /// Allowed to others.
    pub shared: Perm,
}

impl Attachment {
    /// A reader that lets others do anything but write (QEMU's default for a read-only user).
    pub const READER: Self = Self { perm: Perm::CONSISTENT_READ, shared: Perm::CONSISTENT_READ.union(Perm::WRITE_UNCHANGED).union(Perm::RESIZE) };
    /// A user that only reads and lets others do anything, writing included, so a read-only
    /// backend can sit next to a writer (QEMU's `share-rw=on`, `qemu-io --force-share`). Format
    /// nodes take [`Attachment::READER`] on their file child instead: they cache what they read
    /// and must not have it changed underneath.
    pub const SHARED_READER: Self = Self { perm: Perm::CONSISTENT_READ, shared: Perm::all() };
    /// A writer that shares only reading and unchanged writes (QEMU's default for a writer).
    pub const WRITER: Self = Self {
        perm: Perm::CONSISTENT_READ.union(Perm::WRITE).union(Perm::RESIZE),
        shared: Perm::CONSISTENT_READ.union(Perm::WRITE_UNCHANGED),
    };
    /// A parent format node on its file child: reads and writes what the format needs, shares
    /// reading.
    pub const FORMAT_FILE: Self = Self {
        perm: Perm::CONSISTENT_READ.union(Perm::WRITE).union(Perm::RESIZE),
        shared: Perm::CONSISTENT_READ.union(Perm::WRITE_UNCHANGED),
    };
}

/// Checks that `a` and `b` can hold the same node at once; names the first conflict.
pub fn compatible(a: Attachment, b: Attachment) -> Result<(), &'static str> {
    let clash = (a.perm - b.shared) | (b.perm - a.shared);
    if clash.contains(Perm::WRITE) {
        Err("another user holds or refuses write")
    } else if clash.contains(Perm::RESIZE) {
        Err("another user holds or refuses resize")
    } else if clash.contains(Perm::WRITE_UNCHANGED) {
        Err("another user holds or refuses unchanged writes")
    } else if clash.contains(Perm::CONSISTENT_READ) {
        Err("another user refuses consistent reads")
    } else {
        Ok(())
    }
}
