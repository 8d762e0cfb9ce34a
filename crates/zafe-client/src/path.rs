//! Building request paths: the one place where user input becomes part of
//! a URL, so a `?`, `#`, `%` or `..` in a secret's name can never change
//! which endpoint is called.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but unreserved characters is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Escapes one path segment (a `/` in it is escaped too).
pub fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// Escapes each segment of a path and keeps its slashes.
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_fragment_characters_cannot_escape_the_path() {
        assert_eq!(encode_segment("a?b#c%d/e"), "a%3Fb%23c%25d%2Fe");
        assert_eq!(encode_path("app/prod key?x"), "app/prod%20key%3Fx");
        assert_eq!(encode_path("a/b"), "a/b");
    }
}
