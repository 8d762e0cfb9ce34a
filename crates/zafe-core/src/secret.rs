//! Key material in memory (R-KEY-7).
//!
//! A [`SecretKey`] lives in its own heap allocation, which is locked into RAM
//! with `mlock` where the OS allows (so it is never written to swap) and
//! overwritten with zeros when dropped. It has no `Debug` output beyond a
//! placeholder, no `Clone` except the explicit [`SecretKey::duplicate`], and
//! no way to reach its bytes except [`SecretKey::expose`].

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// Length of every symmetric key Zafe uses: 256 bits.
pub(crate) const KEY_LEN: usize = 32;

/// A 256-bit symmetric key: mlock'ed where possible, zeroized on drop,
/// compared in constant time, `Debug` redacted. See the module docs.
pub struct SecretKey(Box<[u8; KEY_LEN]>);

impl SecretKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut key = Self::zeroed();
        crate::crypto::fill_random(&mut key.0[..]);
        key
    }

    /// Takes a copy of `bytes`; the caller remains responsible for wiping its
    /// own copy.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let mut key = Self::zeroed();
        key.0.copy_from_slice(bytes);
        key
    }

    /// Like [`SecretKey::from_bytes`], for a slice of unchecked length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Self::from_bytes(bytes))
    }

    /// The key bytes: the only way to reach them. Do not copy them into
    /// memory that is not wiped.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// An explicit copy, so that copies of key material are visible in review.
    pub fn duplicate(&self) -> Self {
        Self::from_bytes(&self.0)
    }

    fn zeroed() -> Self {
        let key = Self(Box::new([0u8; KEY_LEN]));
        lock_in_memory(key.0.as_ptr(), KEY_LEN);
        key
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
        // No munlock: locks do not nest, and the page may hold another key that
        // must stay locked. The allocator reuses the page, so the number of
        // locked pages stays bounded by the peak amount of key material.
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.0[..].ct_eq(&other.0[..]).into()
    }
}

impl Eq for SecretKey {}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A secret value as text (a resolved `zafe://` reference, a value read from
/// a `.env` file): zeroized when dropped, `Debug` shows a placeholder, and the
/// text is reached only through [`SecretString::expose`], so every use of the
/// plaintext is visible in review. Not mlock'ed: values can be large and many.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Takes ownership of `value` (no copy is left behind).
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The plaintext: the only way to reach it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Reads a JSON string straight into a `SecretString` (resolved values).
impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// Best effort: `mlock` fails without CAP_IPC_LOCK once RLIMIT_MEMLOCK is used
/// up, and then the key is still zeroized on drop, just swappable.
///
/// The only `unsafe` of this crate: one FFI call, sound for the reason below.
#[cfg(unix)]
#[allow(unsafe_code)]
fn lock_in_memory(ptr: *const u8, len: usize) {
    // SAFETY: `ptr..ptr+len` is a live allocation owned by the caller; mlock
    // only changes paging behaviour and never reads or writes the memory.
    unsafe {
        libc::mlock(ptr.cast(), len);
    }
}

#[cfg(not(unix))]
fn lock_in_memory(_ptr: *const u8, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let key = SecretKey::from_bytes(&[0xAB; KEY_LEN]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab"));
    }

    #[test]
    fn secret_string_debug_is_redacted() {
        let value = SecretString::from("hunter2");
        assert!(!format!("{value:?}").contains("hunter2"));
        assert_eq!(value.expose(), "hunter2");
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(SecretKey::generate(), SecretKey::generate());
    }
}
