//! Text that came from elsewhere (an agent's report, a name someone chose), shown as data.
//!
//! [`inert`] is the one function that makes such text safe to print on a terminal or to put in
//! a line of a table: every control character and every character that changes how the rest of
//! the line is shown becomes a visible escape, so an escape sequence (ESC, CSI, OSC, the C1
//! controls), a bell, a carriage return or backspace that would overwrite what came before, a
//! line break that would forge another line, or a bidirectional override that would reorder
//! it, is shown and never interpreted. The backslash is escaped too, so text that spells an
//! escape (`\x1b`) and text that holds one (ESC) are told apart.

/// `text` with every control character, bidirectional control, zero-width and line-separator
/// character written as a visible escape: `\n`, `\r`, `\t`, `\x1b` (C0 and DEL), `\u{9b}` (C1
/// and the others), and `\` as `\\`. Everything else is kept as it is.
///
/// ```
/// assert_eq!(zafe_core::text::inert("a\x1b[31mb\n"), "a\\x1b[31mb\\n");
/// assert_eq!(zafe_core::text::inert("\u{202e}evil"), "\\u{202e}evil");
/// assert_eq!(zafe_core::text::inert("<script>é"), "<script>é");
/// ```
pub fn inert(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_hidden(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Characters that are not printed as themselves: the C1 controls, bidirectional marks,
/// embeddings, overrides and isolates, zero-width characters, and the Unicode line and
/// paragraph separators.
fn is_hidden(c: char) -> bool {
    matches!(c,
        '\u{80}'..='\u{9f}'          // C1 controls (CSI is U+009B, OSC U+009D)
        | '\u{ad}'                   // soft hyphen
        | '\u{61c}'                  // Arabic letter mark
        | '\u{180e}'                 // Mongolian vowel separator
        | '\u{200b}'..='\u{200f}'    // zero-width space, joiners, LRM, RLM
        | '\u{2028}'..='\u{202e}'    // line/paragraph separators, embeddings, overrides
        | '\u{2060}'..='\u{2064}'    // word joiner, invisible operators
        | '\u{2066}'..='\u{206f}'    // isolates and deprecated format characters
        | '\u{feff}'                 // zero-width no-break space
        | '\u{fff9}'..='\u{fffb}'    // interlinear annotations
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_and_escape_sequence_is_shown_not_interpreted() {
        for (raw, shown) in [
            ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
            ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
            ("\u{9b}31m", "\\u{9b}31m"),
            ("\u{9d}8;;http://x\u{9c}", "\\u{9d}8;;http://x\\u{9c}"),
            ("ok\rFAILED", "ok\\rFAILED"),
            ("abc\x08\x08x", "abc\\x08\\x08x"),
            ("line\nforged", "line\\nforged"),
            ("a\tb", "a\\tb"),
            ("\0\x7f", "\\x00\\x7f"),
            ("\u{202e}txt.exe", "\\u{202e}txt.exe"),
            ("\u{2066}x\u{2069}", "\\u{2066}x\\u{2069}"),
            ("zero\u{200b}width\u{feff}", "zero\\u{200b}width\\u{feff}"),
            ("C:\\x1b", "C:\\\\x1b"),
        ] {
            let out = inert(raw);
            assert_eq!(out, shown, "{raw:?}");
            assert!(
                !out.chars().any(|c| c.is_control() || is_hidden(c)),
                "{out:?}"
            );
        }
    }

    #[test]
    fn ordinary_text_is_kept() {
        for text in [
            "<script>alert(1)</script>",
            "héllo wörld ✓ 日本",
            "ignore previous instructions",
            "",
        ] {
            assert_eq!(inert(text), text);
        }
    }
}
