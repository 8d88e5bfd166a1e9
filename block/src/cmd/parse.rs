//! Parsing qemu-io command lines into [`Command`]s, with qemu-io's getopt rules and messages.

use core::fmt;

use super::size::{parse_pattern, parse_size};

/// qemu-io's largest request (`BDRV_REQUEST_MAX_BYTES`: `INT_MAX` rounded down to 512).
pub const MAX_REQUEST_BYTES: u64 = 2_147_483_136;

/// Most words one command line may hold (a longer one is [`ParseError::TooManyWords`]).
const MAX_WORDS: usize = 16;

/// What a `write` puts on the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Every byte is this pattern (`-P`, default 0xcd as qemu-io).
    Pattern(u8),
    /// Write-zeroes (`-z`); `unmap` (`-u`) allows deallocating.
    Zeroes {
        /// The range may be deallocated.
        unmap: bool,
    },
}

/// One parsed qemu-io command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `read [-P pattern] [-q] OFFSET LEN`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// Every byte read must equal this (`-P`).
        pattern: Option<u8>,
        /// `-q`: print nothing on success.
        quiet: bool,
    },
    /// `write [-P pattern | -z [-u]] [-q] OFFSET LEN`.
    Write {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// Data or zeroes.
        fill: Fill,
        /// `-q`: print nothing on success.
        quiet: bool,
    },
    /// `discard [-q] OFFSET LEN`.
    Discard {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// `-q`: print nothing on success.
        quiet: bool,
    },
    /// `flush`.
    Flush,
}

impl Command {
    /// The command's name as qemu-io spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Read { .. } => "read",
            Command::Write { .. } => "write",
            Command::Discard { .. } => "discard",
            Command::Flush => "flush",
        }
    }
}

/// Why a command line does not parse. [`fmt::Display`] prints qemu-io's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError<'a> {
    /// No words at all.
    Empty,
    /// The first word is not a command this parser knows (`command "X" not found`).
    UnknownCommand(&'a str),
    /// An option letter the command does not take (`read: invalid option -- 'x'`).
    InvalidOption {
        /// The command.
        command: &'static str,
        /// The letter.
        option: char,
    },
    /// An option that needs a value ended the line (`read: option requires an argument -- 'P'`).
    MissingValue {
        /// The command.
        command: &'static str,
        /// The letter.
        option: char,
    },
    /// `-P`'s value is not a byte (`X is not a valid pattern byte`).
    BadPattern(&'a str),
    /// An offset or length is not a size (`Parsing error: ... -- X`).
    BadNumber(&'a str),
    /// Too few words (`bad argument count 1 to read, expected at least 2 arguments`) or, for
    /// `flush`, any.
    ArgCount {
        /// The command.
        command: &'static str,
        /// Words after the command name.
        given: usize,
    },
    /// Positional words other than OFFSET LEN (qemu-io prints the command's usage line).
    Usage(&'static str),
    /// `-z` together with `-P`.
    ZeroAndPattern,
    /// `-u` without `-z`.
    UnmapWithoutZero,
    /// LEN is larger than [`MAX_REQUEST_BYTES`] (the word as given).
    TooLong(&'a str),
    /// More than 16 words.
    TooManyWords,
}

impl ParseError<'_> {
    /// True where qemu-io prints the message on stderr (getopt's and the command table's
    /// complaints); the others go to stdout.
    pub fn to_stderr(&self) -> bool {
        matches!(self, Self::UnknownCommand(_) | Self::InvalidOption { .. } | Self::MissingValue { .. } | Self::ArgCount { .. })
    }
}

impl ParseError<'_> {
    /// The usage line qemu-io prints on stdout after the message (getopt's complaints), if any.
    pub fn usage_after(&self) -> Option<&'static str> {
        match *self {
            Self::InvalidOption { command, .. } | Self::MissingValue { command, .. } => Some(usage(command)),
            _ => None,
        }
    }
}

/// qemu-io's usage line for `command`.
fn usage(command: &str) -> &'static str {
    match command {
        "read" => "read [-abCqrv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset",
        "write" => "write [-bcCfnqruz] [-P pattern | -s source_file] off len -- writes a number of bytes at a specified offset",
        "discard" => "discard [-Cq] off len -- discards a number of bytes at a specified offset",
        _ => "flush -- flush all in-core file state to disk",
    }
}

impl fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Empty => f.write_str("no command given"),
            Self::UnknownCommand(w) => write!(f, "command \"{w}\" not found"),
            Self::InvalidOption { command, option } => write!(f, "{command}: invalid option -- '{option}'"),
            Self::MissingValue { command, option } => write!(f, "{command}: option requires an argument -- '{option}'"),
            Self::BadPattern(w) => write!(f, "{w} is not a valid pattern byte"),
            Self::BadNumber(w) => write!(f, "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- {w}"),
            Self::ArgCount { command: "flush", given } => write!(f, "bad argument count {given} to flush, expected 0 arguments"),
            Self::ArgCount { command, given } => {
                write!(f, "bad argument count {given} to {command}, expected at least 2 arguments")
            }
            Self::Usage(command) => f.write_str(usage(command)),
            Self::ZeroAndPattern => f.write_str("Only one of -z, -P, and -s can be specified at the same time"),
            Self::UnmapWithoutZero => f.write_str("-u requires -z to be specified"),
            Self::TooLong(w) => write!(f, "length cannot exceed {MAX_REQUEST_BYTES}, given {w}"),
            Self::TooManyWords => f.write_str("too many words in one command"),
        }
    }
}

/// Parses one command line, words separated by spaces or tabs (as `qemu-io -c`).
pub fn parse(line: &str) -> Result<Command, ParseError<'_>> {
    parse_words(line.split_ascii_whitespace())
}

/// Parses a command given as words (the kernel splits its `-c` values at commas).
pub fn parse_words<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Command, ParseError<'a>> {
    let mut all: heapless::Vec<&'a str, MAX_WORDS> = heapless::Vec::new();
    for w in words {
        all.push(w).map_err(|_| ParseError::TooManyWords)?;
    }
    let Some((&name, args)) = all.split_first() else { return Err(ParseError::Empty) };
    let command: &'static str = match name {
        "read" | "r" => "read",
        "write" | "w" => "write",
        "discard" | "d" => "discard",
        "flush" | "f" => "flush",
        other => return Err(ParseError::UnknownCommand(other)),
    };
    if command == "flush" {
        return if args.is_empty() { Ok(Command::Flush) } else { Err(ParseError::ArgCount { command, given: args.len() }) };
    }
    if args.len() < 2 {
        return Err(ParseError::ArgCount { command, given: args.len() });
    }
    let opts = Getopt::parse(command, args)?;
    let [offset_word, len_word] = opts.positional.as_slice() else { return Err(ParseError::Usage(command)) };
    let (offset_word, len_word) = (*offset_word, *len_word);
    if opts.zero && opts.pattern.is_some() {
        return Err(ParseError::ZeroAndPattern);
    }
    if opts.unmap && !opts.zero {
        return Err(ParseError::UnmapWithoutZero);
    }
    let offset = parse_size(offset_word).ok_or(ParseError::BadNumber(offset_word))?;
    let len = parse_size(len_word).ok_or(ParseError::BadNumber(len_word))?;
    if len > MAX_REQUEST_BYTES {
        return Err(ParseError::TooLong(len_word));
    }
    let quiet = opts.quiet;
    Ok(match command {
        "read" => Command::Read { offset, len, pattern: opts.pattern, quiet },
        "write" => {
            let fill = if opts.zero { Fill::Zeroes { unmap: opts.unmap } } else { Fill::Pattern(opts.pattern.unwrap_or(0xcd)) };
            Command::Write { offset, len, fill, quiet }
        }
        _ => Command::Discard { offset, len, quiet },
    })
}

/// The options of one command after getopt (GNU rules: options may follow positionals; `--`
/// ends them).
struct Getopt<'a> {
    pattern: Option<u8>,
    quiet: bool,
    zero: bool,
    unmap: bool,
    positional: heapless::Vec<&'a str, MAX_WORDS>,
}

impl<'a> Getopt<'a> {
    fn parse(command: &'static str, args: &[&'a str]) -> Result<Self, ParseError<'a>> {
        // `-r` (qemu-io 9.0+: register the I/O buffer with the host) changes nothing here.
        let takes = |c: char| match command {
            "read" => matches!(c, 'P' | 'q' | 'r'),
            "write" => matches!(c, 'P' | 'q' | 'r' | 'z' | 'u'),
            _ => c == 'q',
        };
        let mut out = Getopt { pattern: None, quiet: false, zero: false, unmap: false, positional: heapless::Vec::new() };
        let mut it = args.iter().copied();
        let mut only_positional = false;
        while let Some(word) = it.next() {
            if only_positional || !word.starts_with('-') || word.len() == 1 {
                out.positional.push(word).map_err(|_| ParseError::TooManyWords)?;
                continue;
            }
            if word == "--" {
                only_positional = true;
                continue;
            }
            // A group of letters: switches, and at most one value-taking letter whose value is
            // the rest of the word or the next word.
            for (i, option) in word.char_indices().skip(1) {
                if !takes(option) {
                    return Err(ParseError::InvalidOption { command, option });
                }
                match option {
                    'P' => {
                        let rest = word.get(i + 1..).unwrap_or("");
                        let value = if rest.is_empty() { it.next().ok_or(ParseError::MissingValue { command, option })? } else { rest };
                        out.pattern = Some(parse_pattern(value).ok_or(ParseError::BadPattern(value))?);
                        break;
                    }
                    'q' => out.quiet = true,
                    'z' => out.zero = true,
                    'u' => out.unmap = true,
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}
