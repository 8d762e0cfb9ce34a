//! Process hardening at start-up (R-KEY-7).
//!
//! The only `unsafe` of this crate: FFI calls to `setrlimit`, `getrlimit` and `prctl`, each
//! with integer arguments or a pointer to a `rlimit` struct owned by the caller (the `SAFETY`
//! comments say which); none keeps a pointer past the call.

#![allow(unsafe_code)]

/// Disables core dumps, so key material in memory never lands in a core
/// file, and (on Linux) marks the process non-dumpable, which also stops
/// other processes of the same user from attaching a debugger or reading
/// `/proc/<pid>/mem`. Returns what could not be done, for a warning.
pub(crate) fn disable_core_dumps() -> Vec<&'static str> {
    let mut failed = Vec::new();
    #[cfg(unix)]
    {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads a valid, initialised struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
            failed.push("setrlimit(RLIMIT_CORE, 0)");
        }
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_DUMPABLE takes plain integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            failed.push("prctl(PR_SET_DUMPABLE, 0)");
        }
    }
    failed
}

/// Whether core dumps are off for this process (for tests and `status`).
#[cfg(target_os = "linux")]
pub fn core_dumps_disabled() -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 1,
        rlim_max: 1,
    };
    // SAFETY: getrlimit writes into a struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) } == 0;
    // SAFETY: PR_GET_DUMPABLE takes no pointers.
    let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    ok && limit.rlim_cur == 0 && dumpable == 0
}
