//! blkdebug's `config=FILE` on the host: QEMU's blkdebug config file (`block/blkdebug.c`
//! `read_config`, parsed by `qemu_config_parse`) read and turned into the same inline rules
//! (`inject-error.N.KEY=VALUE`, `set-state.N.KEY=VALUE`) the block layer's blkdebug driver takes.
//! The block layer has no files (the guest has none), so the host expands the option before the
//! graph opens.
//!
//! The file format, as QEMU's: lines `[inject-error]` or `[set-state]` (optionally
//! `[group "id"]`) open a section, `KEY = "VALUE"` lines fill it, lines starting with `#` and
//! empty lines are skipped, anything else is a parse error. As in QEMU, a node's rules are the
//! file's inject-error rules, then its inline ones, then the file's set-state rules, then the
//! inline ones: the file's rules take the lowest indices and the inline ones move up.

use strata_block::options::Options;

use super::ImgError;

/// Most options an image-opts string may hold here (the open itself takes fewer).
const MAX_TEXT_OPTIONS: usize = 1024;

/// One section of a config file.
#[derive(Debug, PartialEq, Eq)]
struct Section {
    /// `inject-error` or `set-state`.
    group: String,
    /// `KEY`, `VALUE` pairs in file order.
    pairs: Vec<(String, String)>,
}

/// Parses config text as `qemu_config_parse` does; `name` for messages.
fn parse(text: &str, name: &str) -> Result<Vec<Section>, String> {
    let mut out: Vec<Section> = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let lno = i + 1;
        if line.starts_with('\n') || line.starts_with('#') {
            continue;
        }
        let body = line.trim_end_matches(['\n', '\r']);
        if let Some(rest) = body.strip_prefix('[') {
            let inner = rest
                .split(']')
                .next()
                .filter(|_| rest.contains(']'))
                .ok_or(format!("{name}:{lno}: parse error"))?;
            let group = inner.split_whitespace().next().unwrap_or("");
            if group.is_empty() {
                return Err(format!("{name}:{lno}: parse error"));
            }
            if group != "inject-error" && group != "set-state" {
                return Err(format!("{name}:{lno}: There is no option group '{group}'"));
            }
            out.push(Section {
                group: group.to_string(),
                pairs: Vec::new(),
            });
            continue;
        }
        let pair = (|| {
            let t = body.trim_start();
            let (key, rest) = t.split_once(char::is_whitespace)?;
            let rest = rest.trim_start().strip_prefix('=')?.trim_start().strip_prefix('"')?;
            let (value, _) = rest.split_once('"')?;
            (!key.is_empty() && !key.contains('=') && !value.is_empty())
                .then(|| (key.to_string(), value.to_string()))
        })()
        .ok_or(format!("{name}:{lno}: parse error"))?;
        out.last_mut()
            .ok_or(format!("{name}:{lno}: no group defined"))?
            .pairs
            .push(pair);
    }
    Ok(out)
}

/// Shifts the rule number of `key` (`PREFIX` `GROUP.N.REST`) by `by` if it names a rule of
/// `group`.
fn shifted(rest: &str, group: &str, by: usize) -> Option<String> {
    let tail = rest.strip_prefix(group)?.strip_prefix('.')?;
    let (n, key) = tail.split_once('.').unwrap_or((tail, ""));
    let n: usize = n.parse().ok()?;
    let sep = if key.is_empty() { "" } else { "." };
    Some(format!("{group}.{}{sep}{key}", n + by))
}

/// The options text `text` with every blkdebug node's `config=FILE` replaced by the file's
/// rules; `text` unchanged when no node has one.
pub fn expand(text: &str) -> Result<String, ImgError> {
    if !text.contains("config=") {
        return Ok(text.to_string());
    }
    let bad = |e: String| ImgError::failed(format!("Could not open '{text}': {e}"));
    let opts: Options<'_, MAX_TEXT_OPTIONS> =
        Options::parse(text, Some("file")).map_err(|e| bad(e.to_string()))?;
    // The prefixes (`""`, `file.`, …) of blkdebug nodes given a config file, with its sections.
    let mut nodes: Vec<(String, Vec<Section>)> = Vec::new();
    for (key, value) in opts.iter() {
        let Some(prefix) = key.strip_suffix("config") else {
            continue;
        };
        if !(prefix.is_empty() || prefix.ends_with('.')) {
            continue;
        }
        let is_blkdebug = opts
            .get(&format!("{prefix}driver"))
            .is_some_and(|d| d.eq_str("blkdebug"));
        if !is_blkdebug {
            continue;
        }
        let mut buf = vec![0u8; value.unescaped_len()];
        let path = value
            .unescape_into(&mut buf)
            .map_err(|e| bad(format!("{key}: {e:?}")))?;
        let body = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("Could not read blkdebug config file: {e}")))?;
        nodes.push((prefix.to_string(), parse(&body, path).map_err(bad)?));
    }
    if nodes.is_empty() {
        return Ok(text.to_string());
    }
    let mut out: Vec<String> = Vec::new();
    'keys: for (key, value) in opts.iter() {
        for (prefix, sections) in &nodes {
            let Some(rest) = key.strip_prefix(prefix.as_str()) else {
                continue;
            };
            if rest == "config" {
                continue 'keys;
            }
            for group in ["inject-error", "set-state"] {
                let by = sections.iter().filter(|s| s.group == group).count();
                if let Some(new) = shifted(rest, group, by) {
                    out.push(format!("{prefix}{new}={}", value.raw()));
                    continue 'keys;
                }
            }
        }
        out.push(format!("{key}={}", value.raw()));
    }
    for (prefix, sections) in &nodes {
        for group in ["inject-error", "set-state"] {
            for (n, s) in sections.iter().filter(|s| s.group == group).enumerate() {
                for (k, v) in &s.pairs {
                    out.push(format!("{prefix}{group}.{n}.{k}={}", v.replace(',', ",,")));
                }
            }
        }
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests
    use super::*;

    #[test]
    fn sections_and_pairs_as_qemu_reads_them() {
        let text = "# rules\n[inject-error]\nevent = \"l2_update\"\n  errno = \"28\"\n\n[set-state \"x\"]\nevent = \"cluster_alloc\"\nnew_state = \"2\"\n";
        let s = parse(text, "f").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].group, "inject-error");
        assert_eq!(
            s[0].pairs,
            vec![
                ("event".to_string(), "l2_update".to_string()),
                ("errno".to_string(), "28".to_string())
            ]
        );
        assert_eq!(s[1].group, "set-state");
        assert_eq!(s[1].pairs.len(), 2);
        for bad in [
            "event = \"x\"\n",
            "[inject-error]\nevent = x\n",
            "[bogus]\n",
            "[inject-error]\n \n",
            "[inject-error\n",
            // QEMU's `%63s` takes `event="x"` as the key and finds no `=` after it.
            "[inject-error]\nevent=\"x\"\n",
        ] {
            assert!(parse(bad, "f").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inline_rules_move_up_past_the_files() {
        assert_eq!(
            shifted("inject-error.0.event", "inject-error", 2).as_deref(),
            Some("inject-error.2.event")
        );
        assert_eq!(shifted("set-state.1.state", "inject-error", 2), None);
        assert_eq!(expand("driver=raw,file=a").unwrap(), "driver=raw,file=a");
    }
}
