//! Writing files that hold (or replace files that held) secret values.
//!
//! Every write goes to a new temporary file beside the target, created with
//! `O_EXCL` and its final mode from the first byte (so a private file is
//! never readable by others, not even for an instant, and a symlink planted
//! at the temporary name cannot redirect it), is flushed to disk and then
//! renamed over the target: readers see the old file or the new one, never
//! half of one, and an existing file's looser mode is not inherited.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::output::Out;

/// Mode of files holding secret values: owner read/write only.
pub(crate) const PRIVATE: u32 = 0o600;
/// Mode of files without secrets (`.env.zafe`, `.gitignore`).
pub(crate) const PUBLIC: u32 = 0o644;

/// Writes a command's result: to `path` (private, replaced atomically) when
/// given, else to the command's output as it is.
pub(crate) fn write_output(out: Out<'_>, path: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match path {
        Some(path) => write_atomic(path, bytes, PRIVATE),
        None => Ok(out.write_raw(bytes)?),
    }
}

/// Replaces `path` with `contents`, atomically, with `mode`.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?
        .to_string_lossy()
        .into_owned();
    let (temporary, mut file) = create_temporary(&dir, &name, mode)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Creates a new private file that must not exist yet (a backup), with
/// `contents`, and returns its path. If `path` exists, `-1`, `-2`, ... are
/// appended to its name.
pub(crate) fn create_private_new(path: &Path, contents: &[u8]) -> anyhow::Result<PathBuf> {
    for attempt in 0..100 {
        let candidate = if attempt == 0 {
            path.to_path_buf()
        } else {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(format!("-{attempt}"));
            path.with_file_name(name)
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE)
            .open(&candidate)
        {
            Ok(mut file) => {
                file.write_all(contents)
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("cannot write {}", candidate.display()))?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", candidate.display()));
            }
        }
    }
    anyhow::bail!("cannot find a free name for {}", path.display())
}

/// Creates `dir` and its missing parents, owner-only (0700).
pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))
}

fn create_temporary(dir: &Path, name: &str, mode: u32) -> anyhow::Result<(PathBuf, File)> {
    let mut random = [0u8; 8];
    for _ in 0..16 {
        zafe_core::crypto::fill_random(&mut random);
        let temporary = dir.join(format!(".{name}.{}.tmp", hex(&random)));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)
        {
            Ok(file) => return Ok((temporary, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create a file in {}", dir.display()));
            }
        }
    }
    anyhow::bail!("cannot create a temporary file in {}", dir.display())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_existing_world_readable_file_becomes_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.env");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"new", PRIVATE).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(mode(&path), 0o600);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn backups_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env.backup");
        let first = create_private_new(&path, b"one").unwrap();
        let second = create_private_new(&path, b"two").unwrap();
        assert_ne!(first, second);
        assert_eq!(std::fs::read_to_string(&first).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(&second).unwrap(), "two");
        assert_eq!(mode(&second), 0o600);
    }
}

/// A private file written in pieces (a backup) that appears at its path only
/// once complete: a temporary file beside it, created as [`write_atomic`]
/// does, renamed over `path` by [`Incoming::finish`]; removed if dropped
/// unfinished.
pub(crate) struct Incoming {
    temporary: PathBuf,
    path: PathBuf,
    file: Option<File>,
}

impl Incoming {
    /// Starts the file for `path`, mode `mode`.
    pub(crate) fn create(path: &Path, mode: u32) -> anyhow::Result<Self> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .with_context(|| format!("{} is not a file name", path.display()))?
            .to_string_lossy()
            .into_owned();
        let (temporary, file) = create_temporary(&dir, &name, mode)?;
        Ok(Self {
            temporary,
            path: path.to_path_buf(),
            file: Some(file),
        })
    }

    /// Appends `bytes`.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let file = self.file.as_mut().context("the file is already finished")?;
        file.write_all(bytes)
            .with_context(|| format!("cannot write {}", self.temporary.display()))
    }

    /// Flushes to disk and renames the file into place.
    pub(crate) fn finish(mut self) -> anyhow::Result<()> {
        let file = self.file.take().context("the file is already finished")?;
        file.sync_all()
            .and_then(|()| std::fs::rename(&self.temporary, &self.path))
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}
