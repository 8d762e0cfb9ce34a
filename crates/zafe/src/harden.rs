//! Hardening of the client processes that hold a token while they run
//! other programs (`zafe run`, `zafe mcp`), and the only `unsafe` it needs.
//!
//! A command they run is a child of theirs, usually with the same user id.
//! Without this, it can read the parent's `/proc/<ppid>/environ` (which
//! shows the environment block as the parent was started, `ZAFE_TOKEN`
//! included, whatever the parent did to its environment since) and, when
//! ptrace is allowed, its memory. So:
//! - [`forbid_inspection`] marks the process non-dumpable: `/proc/<pid>/`
//!   files then belong to root and processes of the same user can neither
//!   read them nor attach to it (root still can: it has CAP_SYS_PTRACE);
//! - [`scrub_environment`] overwrites the credential values in the original
//!   environment block once they are read, so even who may read
//!   `/proc/<pid>/environ` finds them empty.
//!
//! `unsafe` is allowed in this module (the crate denies it elsewhere, except
//! the pty set-up in `child.rs`): `prctl` takes integer arguments only, and
//! the environment scrub's soundness is argued at its `SAFETY` comment.

#![allow(unsafe_code)]

/// Credential variables `zafe run` and `zafe mcp` read (the client's token)
/// or pass on (never to a child unless asked): scrubbed once read.
pub(crate) const CREDENTIAL_VARIABLES: [&str; 4] = [
    "ZAFE_TOKEN",
    "VAULT_TOKEN",
    "ZAFE_SECRET_ID",
    "ZAFE_SETUP_TOKEN",
];

/// Marks this process non-dumpable (Linux; nothing elsewhere). Children
/// get their own dumpable flag back when they exec.
pub(crate) fn forbid_inspection() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_DUMPABLE takes plain integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Whether this process may be inspected (dumped, traced, its `/proc`
/// files read) by processes of the same user.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn inspectable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no pointers.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
}

#[cfg(unix)]
unsafe extern "C" {
    /// The C library's environment: pointers to `NAME=value` strings, at
    /// first (and for variables nobody set since) inside the block the
    /// kernel placed at exec, which `/proc/<pid>/environ` shows.
    static mut environ: *mut *mut libc::c_char;
}

/// Overwrites with NUL bytes, in place, the value of each variable named in
/// `names`: `/proc/self/environ` no longer shows it and reading the
/// variable gives an empty value from then on. Call it once the values
/// were read, before any other thread reads them.
pub(crate) fn scrub_environment(names: &[&str]) {
    #[cfg(unix)]
    // SAFETY: `environ` is a NULL-terminated array of pointers to
    // NUL-terminated strings owned by the C library; each string's bytes up
    // to its terminator are writable (the exec block, or a setenv copy).
    // Only bytes before the terminator are written, so every string stays
    // terminated where it was. Zafe sets no environment variable from
    // other threads while this runs.
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return;
        }
        while !(*entry).is_null() {
            let start = *entry;
            let len = libc::strlen(start);
            let bytes = std::slice::from_raw_parts_mut(start.cast::<u8>(), len);
            for name in names {
                let name = name.as_bytes();
                if bytes.len() > name.len() && bytes.starts_with(name) && bytes[name.len()] == b'='
                {
                    zeroize::Zeroize::zeroize(&mut bytes[name.len() + 1..]);
                }
            }
            entry = entry.add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // R-DEV-5: the process cannot be inspected by its children.
    #[cfg(target_os = "linux")]
    #[test]
    fn forbid_inspection_makes_the_process_non_dumpable() {
        forbid_inspection();
        assert!(!inspectable());
    }
}
