//! `.env` files (R-DEV-2): a parser that reads them the way the common
//! loaders do (python-dotenv, dotenvy, Node's dotenv), a lossless document
//! model so `zafe import` can rewrite a file with references while keeping
//! its keys, order, comments and layout, and a writer whose output this
//! parser reads back exactly.
//!
//! The syntax accepted:
//!
//! ```text
//! # a comment line; blank lines are kept
//! KEY=value                  unquoted: surrounding whitespace trimmed; a '#'
//!                            after whitespace starts a comment (a#b is a value)
//! export KEY=value           the shell's `export` prefix is accepted and kept
//! KEY = value                whitespace around '=' is allowed
//! KEY='literal $x \n'        single quotes: literal, may span lines
//! KEY="a\nb \"q\" \\ \t"     double quotes: escapes \n \r \t \" \\ \' \$ (any
//!                            other backslash is kept as is); may span lines
//! KEY=`literal`              backticks (Node's dotenv): literal, may span lines
//! KEY="..." # comment        a comment may follow a closing quote
//! ```
//!
//! Keys are `[A-Za-z_][A-Za-z0-9_.-]*`. Values are never interpolated:
//! `${OTHER}` stays as written (python-dotenv and dotenvy would expand it;
//! [`Assignment::uses_interpolation`] lets callers warn). A file may not set
//! the same key twice, contain a NUL byte, or leave a quote open. Windows line
//! endings are accepted (and `\r\n` inside quoted values reads as `\n`); a
//! UTF-8 byte-order mark is skipped and kept.
//!
//! Errors name the line and what is wrong, never a value.

use std::collections::HashMap;
use std::fmt;

use crate::secret::SecretString;

/// A parsed `.env` file. Rendering it with [`Document::render`] gives back
/// the exact original text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    bom: bool,
    entries: Vec<Entry>,
}

/// One logical line of a `.env` file, with its exact original text
/// (including the line ending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An empty or whitespace-only line.
    Blank(String),
    /// A line whose first non-blank character is '#'.
    Comment(String),
    /// `KEY=value`, possibly over several lines (quoted values).
    Assignment(Assignment),
}

/// How a value was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quote {
    /// Unquoted: surrounding whitespace trimmed, no escapes.
    None,
    /// `'...'`: literal.
    Single,
    /// `"..."`: backslash escapes decoded.
    Double,
    /// `` `...` `` (Node's dotenv): literal.
    Backtick,
}

/// `[export ]KEY=value[ # comment]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    line: usize,
    export: bool,
    key: String,
    value: SecretString,
    quote: Quote,
    /// Indentation, `export`, the key, '=' and the blanks after it.
    prefix: String,
    /// The value as written, quotes included.
    raw_value: SecretString,
    /// Everything after the value: blanks, the comment, the line ending.
    suffix: String,
}

impl Assignment {
    /// The 1-based line the assignment starts on.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The variable's name, as written.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value, with quotes removed and escapes decoded.
    pub fn value(&self) -> &SecretString {
        &self.value
    }

    /// How the value was quoted in the file.
    pub fn quote(&self) -> Quote {
        self.quote
    }

    /// Whether the line starts with `export`.
    pub fn exported(&self) -> bool {
        self.export
    }

    /// The trailing comment (from '#'), if any.
    pub fn comment(&self) -> Option<&str> {
        let start = self.suffix.find('#')?;
        Some(self.suffix[start..].trim_end_matches(['\r', '\n']))
    }

    /// True when other loaders would expand `${...}` or `$NAME` in this
    /// value (unquoted or double-quoted) and Zafe takes it literally.
    pub fn uses_interpolation(&self) -> bool {
        if !matches!(self.quote, Quote::None | Quote::Double) {
            return false;
        }
        let bytes = self.value.expose().as_bytes();
        bytes.windows(2).any(|pair| {
            pair[0] == b'$' && (pair[1] == b'{' || pair[1] == b'_' || pair[1].is_ascii_alphabetic())
        })
    }
}

/// Why a `.env` file could not be read. Never contains a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct DotenvError {
    /// The 1-based line where the problem is (for an unclosed quote, the
    /// line it opens on).
    pub line: usize,
    /// What is wrong.
    pub kind: DotenvErrorKind,
}

/// What is wrong on the line of a [`DotenvError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DotenvErrorKind {
    /// The bytes are not UTF-8 (the line is the first with an invalid byte).
    #[error("the file is not valid UTF-8")]
    NotUtf8,
    /// A NUL byte anywhere on the line.
    #[error("a NUL byte, which environment variables cannot hold")]
    Nul,
    /// A line that is neither blank, a comment, nor `KEY=value`.
    #[error("expected KEY=value")]
    MissingEquals,
    /// The key is not `[A-Za-z_][A-Za-z0-9_.-]*`.
    #[error(
        "invalid key: keys are letters, digits, '_', '.' and '-', starting with a letter or '_'"
    )]
    BadKey,
    /// A quoted value runs to the end of the file; names the quote kind.
    #[error("the {0} quote opened here is never closed")]
    Unterminated(&'static str),
    /// Text other than blanks and a `#` comment after a closing quote.
    #[error("unexpected text after the closing quote (only a # comment may follow)")]
    TextAfterQuote,
    /// The same key set twice (loaders disagree on which wins, so neither
    /// is guessed).
    #[error("the key {key} is already set on line {first}")]
    DuplicateKey {
        /// The repeated key (a name, never a value).
        key: String,
        /// The 1-based line of its first assignment.
        first: usize,
    },
}

/// Parses bytes read from a file (checks UTF-8 first, naming the line).
pub fn parse_bytes(bytes: &[u8]) -> Result<Document, DotenvError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(error) => {
            let valid = &bytes[..error.valid_up_to()];
            let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
            Err(DotenvError {
                line,
                kind: DotenvErrorKind::NotUtf8,
            })
        }
    }
}

/// Parses the text of a `.env` file.
pub fn parse(text: &str) -> Result<Document, DotenvError> {
    let (bom, text) = match text.strip_prefix('\u{feff}') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if let Some(position) = text.find('\0') {
        return Err(DotenvError {
            line: line_of(text, position),
            kind: DotenvErrorKind::Nul,
        });
    }
    let mut parser = Parser {
        text,
        position: 0,
        line: 1,
    };
    let mut entries = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    while parser.position < text.len() {
        let entry = parser.entry()?;
        if let Entry::Assignment(assignment) = &entry {
            if let Some(&first) = seen.get(&assignment.key) {
                return Err(DotenvError {
                    line: assignment.line,
                    kind: DotenvErrorKind::DuplicateKey {
                        key: assignment.key.clone(),
                        first,
                    },
                });
            }
            seen.insert(assignment.key.clone(), assignment.line);
        }
        entries.push(entry);
    }
    Ok(Document { bom, entries })
}

impl Document {
    /// Every logical line, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The assignments, in file order.
    pub fn assignments(&self) -> impl Iterator<Item = &Assignment> {
        self.entries.iter().filter_map(|entry| match entry {
            Entry::Assignment(assignment) => Some(assignment),
            _ => None,
        })
    }

    /// The assignment of `key`, if the file sets it (at most once: a
    /// duplicate is a parse error).
    pub fn get(&self, key: &str) -> Option<&Assignment> {
        self.assignments().find(|assignment| assignment.key == key)
    }

    /// The exact original text.
    pub fn render(&self) -> String {
        self.render_with(|_| None)
            .expect("keeping every value never needs quoting")
    }

    /// The document with some values replaced: `replace` returns the new
    /// value for an assignment, or `None` to keep it as written. Indentation,
    /// `export`, comments, blank lines and line endings are kept; new values
    /// are written with [`quote_value`].
    pub fn render_with(
        &self,
        mut replace: impl FnMut(&Assignment) -> Option<String>,
    ) -> Result<String, ValueHasNul> {
        let mut out = String::new();
        if self.bom {
            out.push('\u{feff}');
        }
        for entry in &self.entries {
            match entry {
                Entry::Blank(text) | Entry::Comment(text) => out.push_str(text),
                Entry::Assignment(assignment) => {
                    out.push_str(&assignment.prefix);
                    match replace(assignment) {
                        Some(value) => {
                            out.push_str(&quote_value(&value)?);
                            // `A="x"#note` is a comment after a quote; after an
                            // unquoted value it would be part of the value.
                            if assignment.suffix.starts_with('#') {
                                out.push(' ');
                            }
                        }
                        None => out.push_str(assignment.raw_value.expose()),
                    }
                    out.push_str(&assignment.suffix);
                }
            }
        }
        Ok(out)
    }
}

/// A value with a NUL byte cannot be written to an env file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the value contains a NUL byte, which env files and environment variables cannot hold")]
pub struct ValueHasNul;

/// Whether `key` can be written as a `.env` key.
pub fn is_valid_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(is_key_byte)
}

/// Writes `value` so that [`parse`] reads back exactly `value`, choosing the
/// plainest form that also means the same to other loaders where possible:
/// unquoted for plain text, single quotes (literal everywhere) when there is
/// no `'`, `\` or line break, double quotes with escapes otherwise.
pub fn quote_value(value: &str) -> Result<String, ValueHasNul> {
    if value.contains('\0') {
        return Err(ValueHasNul);
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+,=?~^".contains(c);
    if value.chars().all(plain) {
        return Ok(value.to_string());
    }
    if !value.contains(['\'', '\\']) && !value.chars().any(char::is_control) {
        return Ok(format!("'{value}'"));
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            other => out.push(other),
        }
    }
    out.push('"');
    Ok(out)
}

/// One `KEY=value` line (with '\n'), written with [`quote_value`].
pub fn assignment_line(key: &str, value: &str) -> Result<String, ValueHasNul> {
    Ok(format!("{key}={}\n", quote_value(value)?))
}

struct Parser<'a> {
    text: &'a str,
    position: usize,
    /// The 1-based line `position` is on.
    line: usize,
}

impl Parser<'_> {
    fn entry(&mut self) -> Result<Entry, DotenvError> {
        let start = self.position;
        let line_end = self.end_of_line(start);
        let content = self.text[start..line_end].trim_end_matches(['\n', '\r']);
        let trimmed = content.trim_start_matches([' ', '\t']);
        if trimmed.trim_end().is_empty() {
            return Ok(Entry::Blank(self.advance_to(line_end)));
        }
        if trimmed.starts_with('#') {
            return Ok(Entry::Comment(self.advance_to(line_end)));
        }
        self.assignment(start, line_end).map(Entry::Assignment)
    }

    fn assignment(&mut self, start: usize, line_end: usize) -> Result<Assignment, DotenvError> {
        let line = self.line;
        let error = |kind| DotenvError { line, kind };
        let bytes = self.text.as_bytes();
        let mut i = skip_blanks(bytes, start);

        let mut export = false;
        if self.text[i..].starts_with("export") {
            let after = skip_blanks(bytes, i + "export".len());
            if after > i + "export".len() && after < bytes.len() && bytes[after] != b'=' {
                export = true;
                i = after;
            }
        }

        let key_start = i;
        if !(i < bytes.len() && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_')) {
            return Err(error(DotenvErrorKind::BadKey));
        }
        while i < bytes.len() && is_key_byte(bytes[i]) {
            i += 1;
        }
        let key = self.text[key_start..i].to_string();
        i = skip_blanks(bytes, i);
        if i >= bytes.len() || bytes[i] != b'=' {
            let at_end_of_key = i >= line_end || matches!(bytes[i], b'\n' | b'\r' | b'#');
            return Err(error(if at_end_of_key {
                DotenvErrorKind::MissingEquals
            } else {
                DotenvErrorKind::BadKey
            }));
        }
        i = skip_blanks(bytes, i + 1);
        let prefix = self.text[start..i].to_string();

        let quote = match bytes.get(i) {
            Some(b'\'') => Quote::Single,
            Some(b'"') => Quote::Double,
            Some(b'`') => Quote::Backtick,
            _ => Quote::None,
        };
        let (value, value_end) = if quote == Quote::None {
            let blank_before = prefix.ends_with([' ', '\t']);
            let value_end = unquoted_end(bytes, i, line_end, blank_before);
            (self.text[i..value_end].to_string(), value_end)
        } else {
            let (closing, name) = match quote {
                Quote::Single => (b'\'', "single"),
                Quote::Double => (b'"', "double"),
                _ => (b'`', "backtick"),
            };
            let mut j = i + 1;
            loop {
                match bytes.get(j) {
                    None => return Err(error(DotenvErrorKind::Unterminated(name))),
                    Some(b'\\') if quote == Quote::Double => j += 2,
                    Some(&b) if b == closing => break,
                    Some(_) => j += 1,
                }
            }
            if j >= bytes.len() {
                return Err(error(DotenvErrorKind::Unterminated(name)));
            }
            let inner = self.text[i + 1..j].replace("\r\n", "\n");
            let value = if quote == Quote::Double {
                unescape_double(&inner)
            } else {
                inner
            };
            let value_end = j + 1;
            // Only blanks and a comment may follow on the closing line.
            let closing_line_end = self.end_of_line(value_end);
            let rest = self.text[value_end..closing_line_end].trim_end_matches(['\n', '\r']);
            let rest = rest.trim_start_matches([' ', '\t']);
            if !rest.is_empty() && !rest.starts_with('#') {
                return Err(DotenvError {
                    line: line_of_from(self.text, start, line, value_end),
                    kind: DotenvErrorKind::TextAfterQuote,
                });
            }
            (value, value_end)
        };
        let raw_value = SecretString::new(self.text[i..value_end].to_string());
        let entry_end = self.end_of_line(value_end);
        let suffix = self.text[value_end..entry_end].to_string();
        self.advance_to(entry_end);
        Ok(Assignment {
            line,
            export,
            key,
            value: SecretString::new(value),
            quote,
            prefix,
            raw_value,
            suffix,
        })
    }

    /// The index just past the next '\n' at or after `from` (or the end).
    fn end_of_line(&self, from: usize) -> usize {
        match self.text[from..].find('\n') {
            Some(offset) => from + offset + 1,
            None => self.text.len(),
        }
    }

    /// Moves to `end`, counting lines, and returns the text passed over.
    fn advance_to(&mut self, end: usize) -> String {
        let passed = &self.text[self.position..end];
        self.line += passed.matches('\n').count();
        self.position = end;
        passed.to_string()
    }
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-'
}

fn skip_blanks(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
        i += 1;
    }
    i
}

/// The end of an unquoted value starting at `start`: before a '#' that
/// follows a blank, with trailing blanks trimmed. `blank_before` says whether
/// blanks separate the value from '=': `A=#x` is the value `#x` (as
/// python-dotenv reads it; dropping it silently would lose a password), while
/// `A= # note` is empty.
fn unquoted_end(bytes: &[u8], start: usize, line_end: usize, blank_before: bool) -> usize {
    let mut end = line_end;
    while end > start && matches!(bytes[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    let mut i = start;
    while i < end {
        let after_blank = if i == start {
            blank_before
        } else {
            bytes[i - 1] == b' ' || bytes[i - 1] == b'\t'
        };
        if bytes[i] == b'#' && after_blank {
            end = i;
            break;
        }
        i += 1;
    }
    while end > start && (bytes[end - 1] == b' ' || bytes[end - 1] == b'\t') {
        end -= 1;
    }
    end
}

fn unescape_double(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(escaped @ ('"' | '\\' | '\'' | '$')) => out.push(escaped),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn line_of(text: &str, position: usize) -> usize {
    1 + text[..position].matches('\n').count()
}

fn line_of_from(text: &str, start: usize, start_line: usize, position: usize) -> usize {
    start_line + text[start..position].matches('\n').count()
}

impl fmt::Display for Quote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quote::None => "unquoted",
            Quote::Single => "single-quoted",
            Quote::Double => "double-quoted",
            Quote::Backtick => "backtick-quoted",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(text: &str) -> Vec<(String, String)> {
        parse(text)
            .unwrap()
            .assignments()
            .map(|a| (a.key().to_string(), a.value().expose().to_string()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_common_syntax() {
        let text = "\
# database
DB_HOST=localhost
export DB_PORT=5432
  INDENTED = spaced value   # trailing comment
HASH_IN_VALUE=a#b
HASH_FIRST=#not-a-comment
EMPTY=
EMPTY_COMMENT= # nothing
SINGLE='literal $HOME \\n # not a comment'
DOUBLE=\"tab\\there \\\"quoted\\\" back\\\\slash \\$HOME \\d\"  # after
BACKTICK=`it's \"both\"`
MULTI=\"line one
line two\"
SINGLE_MULTI='-----BEGIN KEY-----
abc
-----END KEY-----'
export=1
dotted.key-name=x
";
        assert_eq!(
            values(text),
            pairs(&[
                ("DB_HOST", "localhost"),
                ("DB_PORT", "5432"),
                ("INDENTED", "spaced value"),
                ("HASH_IN_VALUE", "a#b"),
                ("HASH_FIRST", "#not-a-comment"),
                ("EMPTY", ""),
                ("EMPTY_COMMENT", ""),
                ("SINGLE", "literal $HOME \\n # not a comment"),
                ("DOUBLE", "tab\there \"quoted\" back\\slash $HOME \\d"),
                ("BACKTICK", "it's \"both\""),
                ("MULTI", "line one\nline two"),
                (
                    "SINGLE_MULTI",
                    "-----BEGIN KEY-----\nabc\n-----END KEY-----"
                ),
                ("export", "1"),
                ("dotted.key-name", "x"),
            ])
        );
        let document = parse(text).unwrap();
        assert_eq!(document.render(), text, "the document model is lossless");
        let port = document.get("DB_PORT").unwrap();
        assert!(port.exported());
        assert_eq!(port.line(), 3);
        assert_eq!(
            document.get("INDENTED").unwrap().comment(),
            Some("# trailing comment")
        );
        assert_eq!(document.get("MULTI").unwrap().line(), 12);
        assert_eq!(document.get("SINGLE_MULTI").unwrap().line(), 14);
        assert_eq!(document.get("export").unwrap().line(), 17);
    }

    #[test]
    fn windows_line_endings_and_bom() {
        let text = "\u{feff}A=1\r\nB=\"x\r\ny\"\r\n# c\r\n";
        assert_eq!(values(text), pairs(&[("A", "1"), ("B", "x\ny")]));
        assert_eq!(parse(text).unwrap().render(), text);
    }

    #[test]
    fn errors_name_the_line_and_never_the_value() {
        let cases: &[(&str, usize, DotenvErrorKind)] = &[
            ("A=1\nB\n", 2, DotenvErrorKind::MissingEquals),
            ("A=1\nexport B\n", 2, DotenvErrorKind::MissingEquals),
            ("1A=x\n", 1, DotenvErrorKind::BadKey),
            ("A B=x\n", 1, DotenvErrorKind::BadKey),
            ("=x\n", 1, DotenvErrorKind::BadKey),
            (
                "A=1\n\nB=\"s3cr3t\nmore\n",
                3,
                DotenvErrorKind::Unterminated("double"),
            ),
            ("B='s3cr3t\n", 1, DotenvErrorKind::Unterminated("single")),
            ("B=`s3cr3t\n", 1, DotenvErrorKind::Unterminated("backtick")),
            (
                "B=\"s3cr3t\\\"\n",
                1,
                DotenvErrorKind::Unterminated("double"),
            ),
            ("B=\"s3\ncr\"3t\n", 2, DotenvErrorKind::TextAfterQuote),
            ("B='s3cr3t' x\n", 1, DotenvErrorKind::TextAfterQuote),
            ("A=1\nB=s3\0cr3t\n", 2, DotenvErrorKind::Nul),
            (
                "A=s3cr3t\n# x\nA=other\n",
                3,
                DotenvErrorKind::DuplicateKey {
                    key: "A".into(),
                    first: 1,
                },
            ),
        ];
        for (text, line, kind) in cases {
            let error = parse(text).unwrap_err();
            assert_eq!((&error.line, &error.kind), (line, kind), "{text:?}");
            assert!(!error.to_string().contains("s3cr3t"), "{error}");
        }
        let error = parse_bytes(b"A=1\nB=\xff\n").unwrap_err();
        assert_eq!((error.line, error.kind), (2, DotenvErrorKind::NotUtf8));
    }

    #[test]
    fn render_with_replaces_values_and_keeps_the_rest() {
        let text = "# top\nexport A=secret-a # keep me\n\n  B=\"multi\nline\"\nC='c'\n";
        let document = parse(text).unwrap();
        let rendered = document
            .render_with(|a| (a.key() != "C").then(|| format!("zafe://app/dev/{}", a.key())))
            .unwrap();
        assert_eq!(
            rendered,
            "# top\nexport A=zafe://app/dev/A # keep me\n\n  B=zafe://app/dev/B\nC='c'\n"
        );
        // A comment right after a closing quote stays a comment.
        let document = parse("A=\"x\"#note\nB='y'#n2\n").unwrap();
        let rendered = document.render_with(|_| Some("plain".into())).unwrap();
        assert_eq!(rendered, "A=plain #note\nB=plain #n2\n");
        let reread = parse(&rendered).unwrap();
        assert_eq!(reread.get("A").unwrap().value().expose(), "plain");
    }

    #[test]
    fn interpolation_is_detected_not_performed() {
        let document = parse("A=${B}\nC='${B}'\nD=\"$HOME\"\nE=cost$5\n").unwrap();
        let flags: Vec<bool> = document
            .assignments()
            .map(|a| a.uses_interpolation())
            .collect();
        assert_eq!(flags, [true, false, true, false]);
        assert_eq!(document.get("A").unwrap().value().expose(), "${B}");
    }

    #[test]
    fn quote_value_picks_the_plainest_safe_form() {
        assert_eq!(quote_value("abc").unwrap(), "abc");
        assert_eq!(quote_value("").unwrap(), "");
        assert_eq!(
            quote_value("zafe://app/dev/KEY?version=2").unwrap(),
            "zafe://app/dev/KEY?version=2"
        );
        assert_eq!(quote_value("a b#c $x").unwrap(), "'a b#c $x'");
        assert_eq!(quote_value("it's\n").unwrap(), "\"it's\\n\"");
        assert_eq!(quote_value("a\\b").unwrap(), "\"a\\\\b\"");
        assert_eq!(quote_value("a\0b"), Err(ValueHasNul));
        assert!(
            is_valid_key("A_1.b-c")
                && !is_valid_key("1A")
                && !is_valid_key("")
                && !is_valid_key("A B")
        );
    }

    fn key() -> impl Strategy<Value = String> {
        "[A-Za-z_][A-Za-z0-9_.-]{0,10}"
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[^\\x00]{0,24}",
            "[ a-z'\"`\\\\$#=\n\r\t{}]{0,24}",
            "[a-z]{0,8}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// What the writer writes, the parser reads back exactly.
        #[test]
        fn written_values_read_back_exactly(
            entries in prop::collection::btree_map(key(), value(), 0..12),
            crlf in any::<bool>(),
        ) {
            let mut text = String::new();
            for (k, v) in &entries {
                text.push_str(&assignment_line(k, v).unwrap());
                text.push_str("# a comment\n\n");
            }
            if crlf {
                // Line endings between entries only: values keep their bytes.
                text = text.replace("# a comment\n", "# a comment\r\n");
            }
            let document = parse(&text).unwrap();
            let read: Vec<(String, String)> = document
                .assignments()
                .map(|a| (a.key().to_string(), a.value().expose().to_string()))
                .collect();
            let expected: Vec<(String, String)> = entries.into_iter().collect();
            prop_assert_eq!(read, expected);
            prop_assert_eq!(document.render(), text);
        }

        /// Rewriting values keeps keys and order, and reads back the new values.
        #[test]
        fn render_with_round_trips(
            entries in prop::collection::btree_map(key(), (value(), value()), 1..8),
        ) {
            let mut text = String::new();
            for (k, (old, _)) in &entries {
                text.push_str(&assignment_line(k, old).unwrap());
            }
            let document = parse(&text).unwrap();
            let rewritten = document
                .render_with(|a| Some(entries[a.key()].1.clone()))
                .unwrap();
            let reread = parse(&rewritten).unwrap();
            for (assignment, (k, (_, new))) in reread.assignments().zip(&entries) {
                prop_assert_eq!(assignment.key(), k.as_str());
                prop_assert_eq!(assignment.value().expose(), new.as_str());
            }
        }

        /// The stable half of the fuzz target (fuzz/fuzz_targets/dotenv.rs):
        /// any input parses or fails with a line inside the file, never panics,
        /// and whatever parses renders back to the same text.
        #[test]
        fn arbitrary_text_never_panics(text in "[A-Za-z_=#'\"` \t\r\n\\\\$.{}-]{0,80}|\\PC{0,60}") {
            match parse(&text) {
                Ok(document) => prop_assert_eq!(document.render(), text),
                Err(error) => prop_assert!(error.line >= 1 && error.line <= 1 + text.matches('\n').count()),
            }
        }
    }
}
