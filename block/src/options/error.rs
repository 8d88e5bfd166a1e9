//! Errors of the options grammar.

use core::fmt;

use super::value::{Value, ValueError};

/// What went wrong in an options string; see [`OptionsError`] for where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionsErrorKind {
    /// An element starts with `=`: `=on` or `a=1,=2`.
    EmptyKey,
    /// An element has no `=` and no implied key applies (`disk0` without an implied key, or any
    /// element after the first). The error's key is the element's text up to the next `,`.
    MissingEquals,
    /// An element is empty: a leading comma (`,a=1`) or a trailing comma (`a=1,`). A comma inside
    /// a value must be written `,,`.
    EmptyElement,
    /// A key contains a character other than ASCII letters, digits, `-`, `_` and `.`.
    BadKeyChar {
        /// The offending character.
        ch: char,
    },
    /// A dotted key has an empty component: `a..b`, `.a` or `a.`. The offset points at a `.`
    /// next to the empty component.
    EmptyKeyComponent,
    /// The same key appears twice; the offset is the second occurrence.
    DuplicateKey,
    /// A key is given a value and also has children (`backing=foo,backing.driver=raw`). The
    /// error's key is the one given a value; the offset is the later of the two elements.
    ScalarAndChildren,
    /// The input has more elements than the [`Options`](super::Options) can hold; the offset is
    /// the first element that did not fit.
    TooManyEntries {
        /// The most entries the options can hold.
        capacity: usize,
    },
    /// [`OptionsView::check_only`](super::OptionsView::check_only) found a key that is not
    /// allowed. The error's key is the full dotted name down to the level that was checked.
    UnknownKey,
    /// A value could not be interpreted; made by [`OptionsError::bad_value`]. The offset is the
    /// start of the value.
    BadValue(ValueError),
}

/// An error in an options string: what went wrong, where, and for which key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionsError<'a> {
    /// What went wrong.
    pub kind: OptionsErrorKind,
    /// Byte offset in the input where the problem is.
    pub offset: usize,
    /// The key concerned, borrowed from the input, where there is one.
    pub key: Option<&'a str>,
}

impl<'a> OptionsError<'a> {
    /// An error of `kind` at byte `offset`, about `key`.
    pub const fn new(kind: OptionsErrorKind, offset: usize, key: Option<&'a str>) -> Self {
        OptionsError { kind, offset, key }
    }

    /// A [`OptionsErrorKind::BadValue`] error for `value` of `key`, located at the value.
    ///
    /// For callers that read a value with, say, [`Value::parse_size`] and want to report the
    /// failure with its place in the input.
    pub const fn bad_value(key: &'a str, value: &Value<'_>, error: ValueError) -> Self {
        OptionsError::new(OptionsErrorKind::BadValue(error), value.offset(), Some(key))
    }
}

impl fmt::Display for OptionsError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use OptionsErrorKind as K;
        let key = self.key.unwrap_or("");
        write!(f, "at byte {}: ", self.offset)?;
        match self.kind {
            K::EmptyKey => f.write_str("empty key before \"=\""),
            K::MissingEquals => write!(f, "expected key=value, found \"{key}\""),
            K::EmptyElement => {
                f.write_str("empty option (stray \",\"; write \",,\" for a comma inside a value)")
            }
            K::BadKeyChar { ch } => write!(
                f,
                "invalid character {ch:?} in key \"{key}\" \
                 (keys use ASCII letters, digits, '-', '_' and '.')"
            ),
            K::EmptyKeyComponent => write!(f, "empty component in dotted key \"{key}\""),
            K::DuplicateKey => write!(f, "duplicate key \"{key}\""),
            K::ScalarAndChildren => {
                write!(f, "key \"{key}\" has both a value and child options")
            }
            K::TooManyEntries { capacity } => {
                write!(f, "too many options at key \"{key}\" (at most {capacity})")
            }
            K::UnknownKey => write!(f, "unknown option \"{key}\""),
            K::BadValue(error) => write!(f, "invalid value for \"{key}\": {error}"),
        }
    }
}
