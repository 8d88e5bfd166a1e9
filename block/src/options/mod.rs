//! The one options grammar of Strata, in the style of QEMU's `-blockdev` / QemuOpts.
//!
//! The kernel command line, `qemu-runner boot` and `qemu-runner img` all describe block devices
//! with the same text, for example:
//!
//! ```text
//! driver=qcow2,file=top,backing.driver=raw,backing.file=base,read-only=on
//! ```
//!
//! # Grammar
//!
//! - The input is a list of elements separated by `,`. Each element is `key=value`.
//! - A literal comma inside a value is written `,,` (QEMU's escaping): `file=a,,b` has the value
//!   `a,b`, and `a=1,,` has the value `1,`. Nothing else is escaped; a value may contain `=`.
//! - Values may be empty (`key=`).
//! - Keys are non-empty and made of ASCII letters, digits, `-` and `_`, with `.` separating the
//!   components of a dotted child key (`backing.file`). Empty components (`a..b`, `.a`, `a.`)
//!   are errors.
//! - **Implied key**: [`parse`] takes `implied: Option<&str>`. If it is given and the *first*
//!   element has no `=` before its first `,`, the whole element is the value of that key, as in
//!   QEMU's `-drive file` or `-device driver`: with `implied = Some("device")`, both `disk0` and
//!   `disk0,read-only=on` set `device=disk0`. Without an implied key such an element is an error
//!   ([`OptionsErrorKind::MissingEquals`]); QEMU's bare `flag` meaning `flag=on` is not supported.
//! - The empty input is an empty set. An empty element (`,a=1`, or a trailing comma as in `a=1,`)
//!   is an error, while `a=1,,` is the escaped value `1,`.
//! - A key may appear only once, and may not be both a value and a parent of other keys
//!   (`backing=foo,backing.driver=raw` is [`OptionsErrorKind::ScalarAndChildren`]).
//!
//! # Memory
//!
//! Nothing here allocates. [`Options<'a, N>`](Options) keeps at most `N` entries, each a pair of
//! slices borrowed from the input (values stay escaped until asked for, see [`Value`]). More than
//! `N` entries is [`OptionsErrorKind::TooManyEntries`]. No input makes any function here panic.
//!
//! # Reading options
//!
//! [`Options::get`] looks up a full dotted key. [`Options::child`] returns an [`OptionsView`] of
//! the keys below a prefix, so `opts.child("backing")?.child("file")?.get("driver")` reads
//! `backing.file.driver`; [`Options::root`] gives the same view type for the top level, so code
//! can treat the root and children alike. [`OptionsView::check_only`] rejects unknown keys.

mod error;
mod syntax;
mod value;
mod view;

#[cfg(test)]
mod tests;

pub use error::{OptionsError, OptionsErrorKind};
pub use value::{Value, ValueError, ValueParts};
pub use view::{Iter, OptionsView};

use syntax::{check_compatible, is_parent_of, parse_element};

/// One `key=value` element of the input, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry<'a> {
    /// The full dotted key, e.g. `backing.file`.
    key: &'a str,
    /// The value, still escaped.
    value: Value<'a>,
    /// Byte offset of the element (its key, or its value for an implied key) in the input.
    offset: usize,
}

impl<'a> Entry<'a> {
    /// Filler for the unused slots of [`Options::entries`].
    const EMPTY: Entry<'static> = Entry::new("", Value::new("", false, 0), 0);

    /// The entry for `key` with `value`, whose element starts at byte `offset`.
    const fn new(key: &'a str, value: Value<'a>, offset: usize) -> Self {
        Entry { key, value, offset }
    }
}

/// A parsed set of options: at most `N` entries borrowed from the input, in input order.
///
/// Build one with [`parse`] or [`Options::parse`].
#[derive(Clone, Debug)]
pub struct Options<'a, const N: usize> {
    /// Slots `..len` hold the entries in input order; the rest are [`Entry::EMPTY`].
    entries: [Entry<'a>; N],
    /// Number of slots in use, at most `N`.
    len: usize,
}

impl<'a, const N: usize> Default for Options<'a, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, const N: usize> Options<'a, N> {
    /// An empty set of options (what the empty input parses to).
    pub const fn new() -> Self {
        Options {
            entries: [Entry::EMPTY; N],
            len: 0,
        }
    }

    /// Parses `input`; see [`parse`] and the [module documentation](self) for the grammar.
    pub fn parse(input: &'a str, implied: Option<&'a str>) -> Result<Self, OptionsError<'a>> {
        parse(input, implied)
    }

    /// Number of entries (`key=value` elements).
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True if there are no entries.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most entries this set can hold (`N`).
    pub const fn capacity(&self) -> usize {
        N
    }

    /// A view of all entries, the same type as [`Options::child`] returns.
    pub fn root(&self) -> OptionsView<'_, 'a> {
        OptionsView::new(self.used(), "")
    }

    /// The value of the full dotted `key`, e.g. `get("backing.file")`.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        self.root().get(key)
    }

    /// All `(full key, value)` pairs in input order.
    pub fn iter(&self) -> Iter<'_, 'a> {
        self.root().iter()
    }

    /// The entries below `name.`, or `None` if there are none; see [`OptionsView::child`].
    pub fn child(&self, name: &str) -> Option<OptionsView<'_, 'a>> {
        self.root().child(name)
    }

    /// Fails with [`OptionsErrorKind::UnknownKey`] on the first top-level name not in `allowed`;
    /// see [`OptionsView::check_only`].
    pub fn check_only(&self, allowed: &[&str]) -> Result<(), OptionsError<'a>> {
        self.root().check_only(allowed)
    }

    /// The slots in use.
    fn used(&self) -> &[Entry<'a>] {
        // `len <= N` always holds, so the fallback is never taken.
        self.entries.get(..self.len).unwrap_or(&[])
    }

    /// Appends `entry` after checking it against the entries already stored.
    fn insert(&mut self, entry: Entry<'a>) -> Result<(), OptionsError<'a>> {
        for old in self.used() {
            check_compatible(old, &entry)?;
        }
        let Some(slot) = self.entries.get_mut(self.len) else {
            let kind = OptionsErrorKind::TooManyEntries { capacity: N };
            return Err(OptionsError::new(kind, entry.offset, Some(entry.key)));
        };
        *slot = entry;
        self.len += 1;
        Ok(())
    }
}

/// Parses `input` into at most `N` options; see the [module documentation](self) for the
/// grammar.
///
/// `implied` names the key of a first element written without `key=` (like QEMU's `-drive file`).
/// It must itself be a valid key; if it is not, the error's offset points into `implied`, not
/// into `input`.
///
/// ```
/// use strata_block::options::parse;
///
/// let opts = parse::<8>("disk0,backing.driver=raw,read-only=on", Some("device")).unwrap();
/// assert!(opts.get("device").unwrap().eq_str("disk0"));
/// assert_eq!(opts.child("backing").unwrap().get("driver").unwrap().as_str(), Some("raw"));
/// assert_eq!(opts.get("read-only").unwrap().parse_bool(), Ok(true));
/// ```
pub fn parse<'a, const N: usize>(
    input: &'a str,
    implied: Option<&'a str>,
) -> Result<Options<'a, N>, OptionsError<'a>> {
    let mut options = Options::new();
    if input.is_empty() {
        return Ok(options);
    }
    let mut start = 0;
    let mut implied = implied;
    loop {
        // Only the first element may use the implied key.
        let (entry, next) = parse_element(input, start, implied.take())?;
        options.insert(entry)?;
        match next {
            Some(next) => start = next,
            None => return Ok(options),
        }
    }
}
