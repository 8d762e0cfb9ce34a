//! The format of every bearer token Zafe issues (R-AUTH-5, R-AUTH-14).
//!
//! ```text
//! zafe_<kind>_<43 base62 characters: 256 random bits><6 base62 characters: checksum>
//! ```
//!
//! The prefix makes a leaked token easy for secret scanners to find and says
//! what it is; the checksum lets scanners (and Zafe, before any lookup) tell a
//! real token from a random string without asking the server. The random part
//! comes from the OS CSPRNG and is never shared between tokens: two tokens
//! from one login have nothing in common but their prefix.
//!
//! Tokens are stored only as `HMAC-SHA256(token key, token)` (see
//! [`lookup_hash`]); never encrypted, never with a slow KDF (a slow hash on a
//! bearer token is an unauthenticated CPU denial of service).

use sha2::{Digest, Sha256};

use crate::crypto::{fill_random, hmac_sha256};
use crate::secret::SecretKey;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// 62^43 > 2^256, so 43 uniform base62 characters carry 256 bits.
const RANDOM_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;

/// What a token is for. The tag is part of the token's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Vault-style service tokens, the root token included.
    Service,
    /// Service accounts for CI.
    ServiceAccount,
    /// Short-lived access tokens of a login session.
    Access,
    /// Refresh tokens of a login session.
    Refresh,
    /// Host agents.
    Agent,
    /// The one-time first-run setup link.
    Setup,
    /// AppRole secret ids.
    SecretId,
    /// Invitations to create an account.
    Invite,
    /// Response-wrapping tokens (single use, short-lived).
    Wrapping,
}

impl TokenKind {
    /// Every kind, for classifying a token by its tag.
    pub const ALL: [TokenKind; 9] = [
        TokenKind::Service,
        TokenKind::ServiceAccount,
        TokenKind::Access,
        TokenKind::Refresh,
        TokenKind::Agent,
        TokenKind::Setup,
        TokenKind::SecretId,
        TokenKind::Invite,
        TokenKind::Wrapping,
    ];

    /// The tag between `zafe_` and the random part (`s`, `sa`, `at`, ...).
    /// No tag followed by `_` begins another tag, so a token has one kind.
    pub fn tag(self) -> &'static str {
        match self {
            TokenKind::Service => "s",
            TokenKind::ServiceAccount => "sa",
            TokenKind::Access => "at",
            TokenKind::Refresh => "rt",
            TokenKind::Agent => "ag",
            TokenKind::Setup => "su",
            TokenKind::SecretId => "sid",
            TokenKind::Invite => "iv",
            TokenKind::Wrapping => "wr",
        }
    }

    fn prefix(self) -> String {
        format!("zafe_{}_", self.tag())
    }
}

/// A new random token of the given kind.
pub fn generate(kind: TokenKind) -> String {
    let prefix = kind.prefix();
    let mut out = String::with_capacity(prefix.len() + RANDOM_LEN + CHECKSUM_LEN);
    out.push_str(&prefix);
    // Rejection sampling keeps every character uniform: bytes >= 248 (4 * 62)
    // are discarded instead of being folded onto the first characters.
    let mut filled = 0;
    let mut buf = [0u8; 64];
    while filled < RANDOM_LEN {
        fill_random(&mut buf);
        for &b in buf.iter() {
            if b < 248 && filled < RANDOM_LEN {
                out.push(ALPHABET[(b % 62) as usize] as char);
                filled += 1;
            }
        }
    }
    let checksum = checksum(&out);
    out.push_str(&checksum);
    out
}

/// Whether `token` has the shape and checksum of a Zafe token of `kind`.
/// Cheap and public: it says nothing about whether the token is valid.
pub fn is_well_formed(token: &str, kind: TokenKind) -> bool {
    let Some(rest) = token.strip_prefix(&kind.prefix()) else {
        return false;
    };
    if rest.len() != RANDOM_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (body, sum) = token.split_at(token.len() - CHECKSUM_LEN);
    checksum(body) == sum
}

/// The kind of a well-formed Zafe token, if it is one.
pub fn kind_of(token: &str) -> Option<TokenKind> {
    TokenKind::ALL
        .into_iter()
        .find(|k| is_well_formed(token, *k))
}

/// The only form in which a token is stored and looked up.
pub fn lookup_hash(key: &SecretKey, token: &str) -> [u8; 32] {
    hmac_sha256(key, token.as_bytes())
}

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let mut n = u32::from_be_bytes(digest[..4].try_into().expect("4 bytes")) as u64;
    let mut out = [0u8; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_prefix_length_and_valid_checksum() {
        for kind in TokenKind::ALL {
            let t = generate(kind);
            assert!(t.starts_with(&format!("zafe_{}_", kind.tag())));
            assert!(is_well_formed(&t, kind), "{kind:?}");
            assert_eq!(kind_of(&t), Some(kind));
        }
    }

    #[test]
    fn one_changed_character_breaks_the_checksum() {
        let t = generate(TokenKind::Service);
        let prefix_len = "zafe_s_".len();
        let mut changed = 0;
        for i in prefix_len..t.len() {
            let mut bytes = t.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let bad = String::from_utf8(bytes).unwrap();
            if !is_well_formed(&bad, TokenKind::Service) {
                changed += 1;
            }
        }
        // A 6-character base62 checksum over a 32-bit digest: a collision on
        // a single edit is possible but vanishingly rare.
        assert!(changed >= t.len() - prefix_len - 1);
    }

    #[test]
    fn tokens_share_nothing_but_their_prefix() {
        let a = generate(TokenKind::Access);
        let b = generate(TokenKind::Access);
        let common = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        assert!(common < "zafe_at_".len() + 4, "{a} / {b}");
    }

    #[test]
    fn characters_are_roughly_uniform() {
        let mut counts = [0usize; 62];
        for _ in 0..2000 {
            let t = generate(TokenKind::Service);
            for b in t["zafe_s_".len().."zafe_s_".len() + RANDOM_LEN].bytes() {
                counts[ALPHABET.iter().position(|&a| a == b).unwrap()] += 1;
            }
        }
        let expected = 2000 * RANDOM_LEN / 62;
        for c in counts {
            assert!(
                c > expected * 8 / 10 && c < expected * 12 / 10,
                "{c} vs {expected}"
            );
        }
    }

    #[test]
    fn foreign_strings_are_not_tokens() {
        assert!(kind_of("hvs.abcdef").is_none());
        assert!(kind_of("").is_none());
        assert!(kind_of("zafe_s_").is_none());
        assert!(kind_of("zafe_s_ééééééééééééééééééééééééééééééééééééééééééééééé").is_none());
    }

    #[test]
    fn lookup_hash_depends_on_the_key() {
        let t = generate(TokenKind::Service);
        let k1 = SecretKey::generate();
        let k2 = SecretKey::generate();
        assert_eq!(lookup_hash(&k1, &t), lookup_hash(&k1, &t));
        assert_ne!(lookup_hash(&k1, &t), lookup_hash(&k2, &t));
    }
}
