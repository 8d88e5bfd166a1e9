//! Views of the entries below a dotted prefix, so nested options read like the top level.

use super::{Entry, OptionsError, OptionsErrorKind, Value};

/// The entries of an [`Options`](super::Options) below one dotted prefix, with keys relative to
/// it.
///
/// [`Options::root`](super::Options::root) is the view with the empty prefix; [`child`] steps
/// down one (or more) levels. The prefix is a slice of one of the input's keys (for example
/// `backing.file.`), so a view needs no buffer.
///
/// [`child`]: OptionsView::child
#[derive(Clone, Copy, Debug)]
pub struct OptionsView<'o, 'a> {
    /// All entries of the options, in input order.
    entries: &'o [Entry<'a>],
    /// Empty for the root, else the dotted path with its trailing `.`, e.g. `backing.`.
    prefix: &'a str,
}

impl<'o, 'a> OptionsView<'o, 'a> {
    /// The view of `entries` below `prefix` (empty, or ending in `.`).
    pub(super) const fn new(entries: &'o [Entry<'a>], prefix: &'a str) -> Self {
        OptionsView { entries, prefix }
    }

    /// The path of this view with its trailing `.` (`backing.file.`), or `""` for the root.
    ///
    /// Handy for naming a relative key in a message to the user.
    pub const fn prefix(&self) -> &'a str {
        self.prefix
    }

    /// The value of `name` relative to this view: on the view of `backing`, `get("driver")`
    /// reads `backing.driver`. `name` may itself be dotted.
    pub fn get(&self, name: &str) -> Option<Value<'a>> {
        self.iter()
            .find(|&(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// The `(relative key, value)` pairs below this view, in input order, nested ones included
    /// (on the view of `backing`, `backing.file.driver` yields `file.driver`).
    pub fn iter(&self) -> Iter<'o, 'a> {
        Iter {
            entries: self.entries.iter(),
            prefix: self.prefix,
        }
    }

    /// The view of the keys below `name.`, or `None` if there are none (also if `name` only has
    /// a value, or is empty). `name` may be dotted: `child("backing.file")` is
    /// `child("backing")` then `child("file")`.
    pub fn child(&self, name: &str) -> Option<OptionsView<'o, 'a>> {
        if name.is_empty() {
            return None;
        }
        // The prefix with `name.` appended, taken from a key that starts with it.
        let len = self.prefix.len() + name.len() + 1;
        self.entries
            .iter()
            .filter(|entry| {
                entry
                    .key
                    .strip_prefix(self.prefix)
                    .is_some_and(|rest| super::is_parent_of(name, rest))
            })
            .find_map(|entry| entry.key.get(..len))
            .map(|prefix| OptionsView::new(self.entries, prefix))
    }

    /// True if any key lies below this view (for the root: if there are any entries at all).
    pub fn has_children(&self) -> bool {
        self.iter().next().is_some()
    }

    /// Fails with [`OptionsErrorKind::UnknownKey`] on the first entry whose name at this level
    /// is not in `allowed`.
    ///
    /// The name at this level is the first component of the relative key, so a child counts by
    /// its name: on the root, `backing.driver=raw` needs `"backing"` in `allowed`. The error's
    /// key is the full dotted name down to this level (`backing.foo` for an unknown `foo` on
    /// the view of `backing`).
    pub fn check_only(&self, allowed: &[&str]) -> Result<(), OptionsError<'a>> {
        for entry in self.entries {
            let Some(rest) = entry.key.strip_prefix(self.prefix) else {
                continue;
            };
            let name = rest.split('.').next().unwrap_or(rest);
            if !allowed.contains(&name) {
                let shown = entry.key.get(..self.prefix.len() + name.len());
                return Err(OptionsError::new(
                    OptionsErrorKind::UnknownKey,
                    entry.offset,
                    shown,
                ));
            }
        }
        Ok(())
    }
}

/// Iterator over the `(relative key, value)` pairs of an [`OptionsView`], in input order.
#[derive(Clone, Debug)]
pub struct Iter<'o, 'a> {
    /// The entries not yet looked at.
    entries: core::slice::Iter<'o, Entry<'a>>,
    /// The view's prefix, stripped from the keys.
    prefix: &'a str,
}

impl<'a> Iterator for Iter<'_, 'a> {
    type Item = (&'a str, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let prefix = self.prefix;
        self.entries.find_map(|entry| {
            entry
                .key
                .strip_prefix(prefix)
                .map(|rest| (rest, entry.value))
        })
    }
}
