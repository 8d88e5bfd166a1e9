//! A small XML well-formedness check for the documents [`super`] writes (and tests read back):
//! one root element, tags balanced and properly nested, names well-formed, attributes quoted
//! and unique, no `<` in values or text, `&` only in the five named entities and character
//! references. It covers the subset SVG output uses (prolog, comments, elements, text), not
//! DTDs, CDATA or processing instructions other than the XML declaration.

/// What a well-formed document holds: its root's name and every element's name in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outline {
    /// The root element's name.
    pub root: String,
    /// Every element's name, in document order (the root first).
    pub elements: Vec<String>,
}

impl Outline {
    /// How many elements are named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.elements.iter().filter(|e| *e == name).count()
    }
}

/// Checks `doc`; the error names the first problem and its byte offset.
pub fn check(doc: &str) -> Result<Outline, String> {
    let mut p = Parser {
        s: doc.as_bytes(),
        at: 0,
    };
    let mut out = Outline::default();
    let mut stack: Vec<String> = Vec::new();
    if p.starts("<?xml") {
        p.skip_past("?>")?;
    }
    loop {
        let text_start = p.at;
        while p.at < p.s.len() && p.s[p.at] != b'<' {
            p.at += 1;
        }
        let text = &doc[text_start..p.at];
        if stack.is_empty() && !text.trim().is_empty() {
            return p.fail("text outside the root element");
        }
        check_text(text).map_err(|e| format!("{e} at byte {text_start}"))?;
        if p.at >= p.s.len() {
            break;
        }
        if p.starts("<!--") {
            p.skip_past("-->")?;
        } else if p.starts("</") {
            p.at += 2;
            let name = p.name()?;
            p.spaces();
            p.expect(b'>')?;
            match stack.pop() {
                Some(open) if open == name => {}
                Some(open) => return p.fail(&format!("</{name}> closes <{open}>")),
                None => return p.fail(&format!("</{name}> without an open element")),
            }
        } else {
            p.at += 1;
            let name = p.name()?;
            if stack.is_empty() {
                if !out.root.is_empty() {
                    return p.fail("a second root element");
                }
                out.root = name.clone();
            }
            out.elements.push(name.clone());
            let mut attrs: Vec<String> = Vec::new();
            loop {
                let had_space = p.spaces();
                if p.starts("/>") {
                    p.at += 2;
                    break;
                }
                if p.starts(">") {
                    p.at += 1;
                    stack.push(name);
                    break;
                }
                if !had_space {
                    return p.fail("expected a space, '>' or '/>'");
                }
                let attr = p.name()?;
                if attrs.contains(&attr) {
                    return p.fail(&format!("attribute {attr} twice"));
                }
                p.spaces();
                p.expect(b'=')?;
                p.spaces();
                p.value()?;
                attrs.push(attr);
            }
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("<{open}> is never closed"));
    }
    if out.root.is_empty() {
        return Err("no root element".into());
    }
    Ok(out)
}

/// Text or an attribute value: no `<`, and every `&` starts a known entity.
fn check_text(t: &str) -> Result<(), String> {
    if t.contains('<') {
        return Err("'<' in a value".into());
    }
    let mut rest = t;
    while let Some(i) = rest.find('&') {
        let after = &rest[i + 1..];
        let end = after.find(';').ok_or("'&' without ';'")?;
        let entity = &after[..end];
        let ok = matches!(entity, "amp" | "lt" | "gt" | "quot" | "apos")
            || entity
                .strip_prefix("#x")
                .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
            || entity
                .strip_prefix('#')
                .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
        if !ok {
            return Err(format!("unknown entity &{entity};"));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// A cursor over the document.
struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn fail<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.at))
    }

    fn starts(&self, prefix: &str) -> bool {
        self.s[self.at..].starts_with(prefix.as_bytes())
    }

    fn skip_past(&mut self, end: &str) -> Result<(), String> {
        let rest = &self.s[self.at..];
        match rest.windows(end.len()).position(|w| w == end.as_bytes()) {
            Some(i) => {
                self.at += i + end.len();
                Ok(())
            }
            None => self.fail(&format!("no closing {end}")),
        }
    }

    /// Skips whitespace; true if there was some.
    fn spaces(&mut self) -> bool {
        let start = self.at;
        while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
        self.at > start
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.s.get(self.at) == Some(&b) {
            self.at += 1;
            Ok(())
        } else {
            self.fail(&format!("expected '{}'", b as char))
        }
    }

    /// An element or attribute name (ASCII letters, digits, `_`, `-`, `.`, `:`; not starting
    /// with a digit, `-` or `.`).
    fn name(&mut self) -> Result<String, String> {
        let start = self.at;
        while self.at < self.s.len()
            && (self.s[self.at].is_ascii_alphanumeric() || b"_-.:".contains(&self.s[self.at]))
        {
            self.at += 1;
        }
        let name = &self.s[start..self.at];
        match name.first() {
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b':' => {
                Ok(String::from_utf8_lossy(name).into_owned())
            }
            _ => self.fail("expected a name"),
        }
    }

    /// A quoted attribute value.
    fn value(&mut self) -> Result<(), String> {
        let quote = match self.s.get(self.at) {
            Some(&q @ (b'"' | b'\'')) => q,
            _ => return self.fail("expected a quoted value"),
        };
        self.at += 1;
        let start = self.at;
        while self.at < self.s.len() && self.s[self.at] != quote {
            self.at += 1;
        }
        if self.at >= self.s.len() {
            return self.fail("unterminated value");
        }
        let value = String::from_utf8_lossy(&self.s[start..self.at]).into_owned();
        self.at += 1;
        check_text(&value).map_err(|e| format!("{e} at byte {start}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_well_formed() {
        let doc = "<?xml version=\"1.0\"?>\n<!-- c --><svg a=\"1\" b='&amp;&#38;&#x26;'><g><t>x &lt; y</t></g><r/></svg>\n";
        let o = check(doc).unwrap_or_default();
        assert_eq!(o.root, "svg");
        assert_eq!(o.elements, ["svg", "g", "t", "r"]);
        assert_eq!(o.count("g"), 1);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "text",
            "<a>",
            "<a></b>",
            "</a>",
            "<a></a><b/>",
            "<a x=1/>",
            "<a x=\"1\" x=\"2\"/>",
            "<a x=\"<\"/>",
            "<a>&nbsp;</a>",
            "<a>&amp</a>",
            "<a>1 < 2</a>",
            "<a x=\"1\"y=\"2\"/>",
            "<1a/>",
            "<a/>junk",
            "<a x=\"1/>",
        ] {
            assert!(check(bad).is_err(), "{bad:?} accepted");
        }
    }
}
