//! Unambiguous encoding of a list of byte strings.
//!
//! Everything Zafe authenticates (associated data, identity proofs, audit
//! chain entries) is a list of fields. Concatenating them naively lets
//! `("ab", "c")` and `("a", "bc")` collide; prefixing each field with its
//! length, and the list with its count, makes the encoding injective.

/// Encodes `fields` as `count (u32 BE) || for each: len (u32 BE) || bytes`.
pub fn fields(fields: &[&[u8]]) -> Vec<u8> {
    let total: usize = fields.iter().map(|f| 4 + f.len()).sum();
    let mut out = Vec::with_capacity(4 + total);
    out.extend_from_slice(&(fields.len() as u32).to_be_bytes());
    for field in fields {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_a_field_differently_changes_the_encoding() {
        assert_ne!(fields(&[b"ab", b"c"]), fields(&[b"a", b"bc"]));
        assert_ne!(fields(&[b"abc"]), fields(&[b"abc", b""]));
        assert_ne!(fields(&[]), fields(&[b""]));
    }
}
