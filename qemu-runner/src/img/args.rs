//! qemu-img-style arguments: short flags that may carry a value (`-c 100`, `-c100`), long flags
//! (`--output=json`, `--output json`), and positional arguments.

use super::image::OpenOptions;
use super::ImgError;

/// Flags with a value that every command takes: how images open (see [`Args::image_options`]).
pub const IMAGE_FLAGS: [&str; 2] = ["--cache-size", "--object"];
/// Switches every command takes: how images open.
pub const IMAGE_SWITCHES: [&str; 1] = ["--allow-backing-anywhere"];

/// Parsed arguments of one `img` subcommand.
#[derive(Debug, Default)]
pub struct Args {
    flags: Vec<(String, Option<String>)>,
    /// Positional arguments in order.
    pub positional: Vec<String>,
}

impl Args {
    /// Parses `args`; `with_value` lists the flags (short like `-c` or long like `--output`) that
    /// take a value, `switches` those that do not, besides the [`IMAGE_FLAGS`] and
    /// [`IMAGE_SWITCHES`] every command takes. Anything else is a usage error.
    pub fn parse(args: &[String], with_value: &[&str], switches: &[&str]) -> Result<Self, ImgError> {
        let with_value: Vec<&str> = with_value.iter().chain(&IMAGE_FLAGS).copied().collect();
        let switches: Vec<&str> = switches.iter().chain(&IMAGE_SWITCHES).copied().collect();
        let mut out = Args::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if arg == "--" {
                out.positional.extend(it.by_ref().cloned());
                break;
            }
            if !arg.starts_with('-') || arg == "-" {
                out.positional.push(arg.clone());
                continue;
            }
            let (flag, inline) = if arg.starts_with("--") {
                match arg.split_once('=') {
                    Some((f, v)) => (f.to_string(), Some(v.to_string())),
                    None => (arg.clone(), None),
                }
            } else if arg.len() > 2 && with_value.contains(&&arg[..2]) {
                (arg[..2].to_string(), Some(arg[2..].to_string()))
            } else {
                (arg.clone(), None)
            };
            if with_value.contains(&flag.as_str()) {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| ImgError::usage(format!("{flag} needs a value")))?,
                };
                out.flags.push((flag, Some(value)));
            } else if switches.contains(&flag.as_str()) && inline.is_none() {
                out.flags.push((flag, None));
            } else {
                return Err(ImgError::usage(format!("unknown option {arg}")));
            }
        }
        Ok(out)
    }

    /// The open options the image-wide flags give (`--cache-size`, `--allow-backing-anywhere`);
    /// the rest default.
    pub fn image_options(&self) -> Result<OpenOptions, ImgError> {
        Ok(OpenOptions {
            cache_bytes: self.value("--cache-size").map(|_| self.size("--cache-size", 0)).transpose()?,
            allow_backing_anywhere: self.has("--allow-backing-anywhere"),
            objects: self.values("--object").map(str::to_string).collect(),
            ..OpenOptions::default()
        })
    }

    /// True if switch `flag` was given.
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|(f, _)| f == flag)
    }

    /// The last value given for `flag`.
    pub fn value(&self, flag: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(f, _)| f == flag)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value given for `flag`, in order (a flag that may repeat, such as `--object`).
    pub fn values<'a>(&'a self, flag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.flags.iter().filter(move |(f, _)| f == flag).filter_map(|(_, v)| v.as_deref())
    }

    /// The value of `flag` parsed as a number (decimal), or `default`.
    pub fn number(&self, flag: &str, default: u64) -> Result<u64, ImgError> {
        match self.value(flag) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| ImgError::usage(format!("{flag} {v}: expected a number"))),
        }
    }

    /// The value of `flag` parsed as a size (`4k`, `1M`, ...; QEMU's suffixes), or `default`.
    pub fn size(&self, flag: &str, default: u64) -> Result<u64, ImgError> {
        match self.value(flag) {
            None => Ok(default),
            Some(v) => parse_size(v).map_err(|e| ImgError::usage(format!("{flag} {v}: {e}"))),
        }
    }

    /// Exactly `n` positional arguments, named in `what` for the error.
    pub fn exactly(&self, n: usize, what: &str) -> Result<&[String], ImgError> {
        if self.positional.len() == n {
            Ok(&self.positional)
        } else {
            Err(ImgError::usage(format!("expected {what}")))
        }
    }
}

/// A size in QEMU's notation, through the block layer's own value parser.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let opts = strata_block::options::Options::<1>::parse(text, Some("v")).map_err(|e| e.to_string())?;
    let value = opts.get("v").ok_or("empty size")?;
    value.parse_size().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_values_and_positionals() {
        let a = Args::parse(
            &s(&["-c", "10", "-d32", "-w", "--output=json", "f.img"]),
            &["-c", "-d", "--output"],
            &["-w"],
        )
        .unwrap();
        assert_eq!(a.number("-c", 0).unwrap(), 10);
        assert_eq!(a.number("-d", 0).unwrap(), 32);
        assert!(a.has("-w"));
        assert_eq!(a.value("--output"), Some("json"));
        assert_eq!(a.positional, vec!["f.img"]);
        assert!(Args::parse(&s(&["-x"]), &[], &[]).is_err());
        assert!(Args::parse(&s(&["-c"]), &["-c"], &[]).is_err());
        assert_eq!(parse_size("4k").unwrap(), 4096);
    }
}
