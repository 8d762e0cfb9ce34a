//! Templates for `zafe inject` (R-DEV-4): any text in which
//! `{{ zafe://... }}` stands for a secret's value (as `op inject` does).
//!
//! A placeholder is `{{`, optional blanks, a reference, optional blanks,
//! `}}`. Other `{{ ... }}` (Helm, Jinja, Mustache) are left exactly as they
//! are; a placeholder that starts like a reference but does not parse, or is
//! never closed, is an error naming its line. Everything outside
//! placeholders is copied byte for byte.

use std::collections::BTreeSet;

use crate::reference::{Reference, ReferenceError, SCHEME};

const OPEN: &str = "{{";
const CLOSE: &str = "}}";

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template<'a> {
    parts: Vec<Part<'a>>,
}

#[derive(Debug, Clone)]
enum Part<'a> {
    Text(&'a str),
    Reference(Reference),
}

/// Why a template was refused. Names the line, never any of the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A placeholder starts with `zafe://` but is not a valid reference.
    #[error("line {line}: invalid reference: {error}")]
    Reference {
        /// The 1-based line the placeholder opens on.
        line: usize,
        /// Why the reference did not parse.
        error: ReferenceError,
    },
    /// A `{{ zafe://` with no `}}` after it.
    #[error("line {line}: a {{{{ zafe://... placeholder is never closed with }}}}")]
    Unclosed {
        /// The 1-based line the placeholder opens on.
        line: usize,
    },
}

impl<'a> Template<'a> {
    /// Finds every placeholder in `text` and parses its reference; the
    /// first bad one is the error.
    pub fn parse(text: &'a str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut copied = 0; // text[..copied] is in `parts`
        let mut search = 0;
        while let Some(offset) = text[search..].find(OPEN) {
            let open = search + offset;
            let inner_start = open + OPEN.len();
            let candidate = text[inner_start..].trim_start_matches([' ', '\t']);
            if !candidate.starts_with(SCHEME) {
                search = inner_start;
                continue;
            }
            let line = 1 + text[..open].matches('\n').count();
            let Some(close_offset) = text[inner_start..].find(CLOSE) else {
                return Err(TemplateError::Unclosed { line });
            };
            let close = inner_start + close_offset;
            let inner = text[inner_start..close].trim_matches([' ', '\t']);
            let reference = Reference::parse(inner)
                .map_err(|error| TemplateError::Reference { line, error })?;
            if copied < open {
                parts.push(Part::Text(&text[copied..open]));
            }
            parts.push(Part::Reference(reference));
            copied = close + CLOSE.len();
            search = copied;
        }
        if copied < text.len() {
            parts.push(Part::Text(&text[copied..]));
        }
        Ok(Self { parts })
    }

    /// Every distinct reference in the template.
    pub fn references(&self) -> BTreeSet<&Reference> {
        self.parts
            .iter()
            .filter_map(|part| match part {
                Part::Reference(reference) => Some(reference),
                Part::Text(_) => None,
            })
            .collect()
    }

    /// The text with every placeholder replaced by `value(reference)`.
    pub fn render<'v>(&self, mut value: impl FnMut(&Reference) -> &'v str) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Reference(reference) => out.push_str(value(reference)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn placeholders_are_replaced_and_everything_else_kept() {
        let text = "db: {{ zafe://app/dev/DB_URL }}\nhelm: {{ .Values.x }}\n\
                    pw: {{zafe:///secret/infra/db#password}} and {{ zafe://app/dev/DB_URL }}{{ x";
        let template = Template::parse(text).unwrap();
        let refs: Vec<String> = template
            .references()
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            refs,
            ["zafe://app/dev/DB_URL", "zafe:///secret/infra/db#password"]
        );
        let out = template.render(|r| {
            if r.to_string().contains("DB_URL") {
                "postgres://u:p@h/db"
            } else {
                "s3cr3t"
            }
        });
        assert_eq!(
            out,
            "db: postgres://u:p@h/db\nhelm: {{ .Values.x }}\n\
             pw: s3cr3t and postgres://u:p@h/db{{ x"
        );
    }

    #[test]
    fn broken_placeholders_name_their_line() {
        assert_eq!(
            Template::parse("a\nb {{ zafe://app/dev }}\n").unwrap_err(),
            TemplateError::Reference {
                line: 2,
                error: ReferenceError::ProjectShape
            }
        );
        assert_eq!(
            Template::parse("a\n\nb {{ zafe://app/dev/K\n").unwrap_err(),
            TemplateError::Unclosed { line: 3 }
        );
        // Extra text inside the braces is part of the reference, and refused.
        assert!(Template::parse("{{ zafe://a/b/c | upper }}").is_err());
    }

    proptest! {
        /// Text without placeholders comes back unchanged, whatever it holds.
        #[test]
        fn text_without_references_is_unchanged(text in "[{} a-z:/\n]{0,60}") {
            prop_assume!(!text.contains("zafe:"));
            let template = Template::parse(&text).unwrap();
            prop_assert!(template.references().is_empty());
            prop_assert_eq!(template.render(|_| unreachable!()), text);
        }
    }
}
