//! The element and key rules of the grammar, used by [`parse`](super::parse).

use super::{Entry, OptionsError, OptionsErrorKind, Value};

/// Parses the element that starts at byte `start` of `input`.
///
/// Returns the entry and the start of the next element, or `None` at the end of the input.
pub(super) fn parse_element<'a>(
    input: &'a str,
    start: usize,
    implied: Option<&'a str>,
) -> Result<(Entry<'a>, Option<usize>), OptionsError<'a>> {
    let bytes = input.as_bytes();
    // Like QEMU, the key runs to the first `=` or `,`.
    let key_end = bytes
        .iter()
        .enumerate()
        .skip(start)
        .find(|&(_, &b)| b == b'=' || b == b',')
        .map_or(bytes.len(), |(i, _)| i);
    // `start` and `key_end` sit on ASCII bytes or the end, so these slices always exist.
    let key = input.get(start..key_end).unwrap_or("");

    if bytes.get(key_end) == Some(&b'=') {
        check_key(key, start)?;
        let (value, next) = scan_value(input, key_end + 1);
        return Ok((Entry::new(key, value, start), next));
    }
    let empty_element = OptionsError::new(OptionsErrorKind::EmptyElement, start, None);
    if let Some(implied) = implied {
        // The whole element, `,,` escapes included, is the value of the implied key.
        let (value, next) = scan_value(input, start);
        if value.raw().is_empty() {
            return Err(empty_element);
        }
        check_key(implied, 0)?;
        return Ok((Entry::new(implied, value, start), next));
    }
    if key.is_empty() {
        return Err(empty_element);
    }
    Err(OptionsError::new(
        OptionsErrorKind::MissingEquals,
        start,
        Some(key),
    ))
}

/// Scans the value that starts at byte `start`: up to the first `,` that is not part of a `,,`
/// pair, or the end of the input.
///
/// Returns the (still escaped) value and the start of the next element, if there is one.
fn scan_value(input: &str, start: usize) -> (Value<'_>, Option<usize>) {
    let bytes = input.as_bytes();
    let mut escaped = false;
    let mut i = start;
    let end = loop {
        match bytes.get(i) {
            None => break None,
            Some(b',') if bytes.get(i + 1) == Some(&b',') => {
                escaped = true;
                i += 2;
            }
            Some(b',') => break Some(i + 1),
            Some(_) => i += 1,
        }
    };
    // `start` and `i` sit on ASCII bytes or the end, so the slice always exists.
    let raw = input.get(start..i).unwrap_or("");
    (Value::new(raw, escaped, start), end)
}

/// True for the bytes a key may contain (`.` separates components).
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

/// Checks the key rules; `offset` is where `key` starts in the input.
fn check_key(key: &str, offset: usize) -> Result<(), OptionsError<'_>> {
    if key.is_empty() {
        return Err(OptionsError::new(OptionsErrorKind::EmptyKey, offset, None));
    }
    if let Some((i, ch)) = key
        .char_indices()
        .find(|&(_, ch)| !u8::try_from(ch).is_ok_and(is_key_byte))
    {
        let kind = OptionsErrorKind::BadKeyChar { ch };
        return Err(OptionsError::new(kind, offset + i, Some(key)));
    }
    let mut pos: usize = 0;
    for component in key.split('.') {
        if component.is_empty() {
            // Point at the `.` before the empty component (or the leading `.`).
            let at = offset + pos.saturating_sub(1);
            let kind = OptionsErrorKind::EmptyKeyComponent;
            return Err(OptionsError::new(kind, at, Some(key)));
        }
        pos += component.len() + 1;
    }
    Ok(())
}

/// True if `child` is strictly below `parent`: `parent` followed by `.` and more.
pub(super) fn is_parent_of(parent: &str, child: &str) -> bool {
    child.starts_with(parent) && child.as_bytes().get(parent.len()) == Some(&b'.')
}

/// Checks that `new` may be stored next to `old`: different keys, and neither a parent of the
/// other.
pub(super) fn check_compatible<'a>(
    old: &Entry<'a>,
    new: &Entry<'a>,
) -> Result<(), OptionsError<'a>> {
    let error = |kind, key| Err(OptionsError::new(kind, new.offset, Some(key)));
    if old.key == new.key {
        return error(OptionsErrorKind::DuplicateKey, new.key);
    }
    if is_parent_of(old.key, new.key) {
        return error(OptionsErrorKind::ScalarAndChildren, old.key);
    }
    if is_parent_of(new.key, old.key) {
        return error(OptionsErrorKind::ScalarAndChildren, new.key);
    }
    Ok(())
}
