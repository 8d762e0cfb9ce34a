//! `.zafe.toml`: which project and environment a repository's secrets
//! belong to, so that commands run inside it need no flags
//! (docs/design/people-and-workflow.md).
//!
//! ```toml
//! project = "myapp"
//! environment = "dev"
//! server = "https://zafe.example.com:8200"   # optional
//! ```
//!
//! The file is searched for from the working directory upward, as git
//! looks for `.git`; the first one found wins. Unknown keys and malformed
//! names are errors that name the file, so a typo never silently selects
//! another project or environment.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file name looked for.
pub(crate) const FILE_NAME: &str = ".zafe.toml";

/// Files larger than this are refused: a project file is a few lines.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The contents of a `.zafe.toml`, checked by [`parse`]. Holds names and an
/// address, never a secret, so the file can be committed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectFile {
    /// The project's slug ([`is_valid_name`]).
    pub project: String,
    /// The default environment ([`is_valid_name`]); a flag overrides it.
    #[serde(default)]
    pub environment: Option<String>,
    /// The server address to use when neither `--addr` nor `ZAFE_ADDR` /
    /// `VAULT_ADDR` names one; must start with `http://` or `https://`.
    #[serde(default)]
    pub server: Option<String>,
}

/// A project file and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The `.zafe.toml` that was read.
    pub path: PathBuf,
    /// What it says.
    pub file: ProjectFile,
}

/// Why a project file could not be used. Both variants name the file.
#[derive(Debug, thiserror::Error)]
pub enum ProjectFileError {
    /// The file (or the working directory) could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file, or `.` for the working directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, a malformed name or address, or too big
    /// (over 64 KiB).
    #[error("{path} is not a valid project file: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the offending name or address quoted.
        message: String,
    },
}

/// Slugs and environment names, as the server accepts them:
/// `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

/// Parses the text of a project file found at `path` (for messages).
pub fn parse(path: &Path, text: &str) -> Result<ProjectFile, ProjectFileError> {
    let invalid = |message: String| ProjectFileError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let file: ProjectFile = toml::from_str(text)
        .map_err(|e: toml::de::Error| invalid(e.to_string().trim().to_string()))?;
    if !is_valid_name(&file.project) {
        return Err(invalid(format!(
            "project {:?} is not a project slug (lowercase letters, digits, '-' and '_')",
            file.project
        )));
    }
    if let Some(env) = &file.environment
        && !is_valid_name(env)
    {
        return Err(invalid(format!(
            "environment {env:?} is not an environment name (lowercase letters, digits, '-' and '_')"
        )));
    }
    if let Some(server) = &file.server
        && !(server.starts_with("https://") || server.starts_with("http://"))
    {
        return Err(invalid(format!(
            "server {server:?} must be an http:// or https:// address"
        )));
    }
    Ok(file)
}

/// Reads and parses the project file at `path`.
pub fn load(path: &Path) -> Result<ProjectFile, ProjectFileError> {
    let io = |source| ProjectFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(ProjectFileError::Invalid {
            path: path.to_path_buf(),
            message: format!("it is {size} bytes long; a project file is at most {MAX_FILE_BYTES}"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse(path, &text)
}

/// The nearest `.zafe.toml` in `start` or a directory above it, parsed;
/// `None` when there is none up to the filesystem root.
pub(crate) fn find_from(start: &Path) -> Result<Option<Found>, ProjectFileError> {
    for dir in start.ancestors() {
        let candidate = dir.join(FILE_NAME);
        if candidate.is_file() {
            return load(&candidate).map(|file| {
                Some(Found {
                    path: candidate,
                    file,
                })
            });
        }
    }
    Ok(None)
}

/// The nearest `.zafe.toml` in the working directory or a directory above
/// it, parsed; `None` when there is none up to the filesystem root.
pub fn find() -> Result<Option<Found>, ProjectFileError> {
    let cwd = std::env::current_dir().map_err(|source| ProjectFileError::Io {
        path: PathBuf::from("."),
        source,
    })?;
    find_from(&cwd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_upward_from_a_subdirectory() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("src/bin");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(find_from(&deep).unwrap(), None);
        std::fs::write(
            root.path().join(FILE_NAME),
            "project = \"myapp\"\nenvironment = \"dev\"\n",
        )
        .unwrap();
        let found = find_from(&deep).unwrap().unwrap();
        assert_eq!(found.path, root.path().join(FILE_NAME));
        assert_eq!(found.file.project, "myapp");
        assert_eq!(found.file.environment.as_deref(), Some("dev"));
        assert_eq!(found.file.server, None);
        // The nearest file wins.
        std::fs::write(deep.join(FILE_NAME), "project = \"tool\"\n").unwrap();
        assert_eq!(find_from(&deep).unwrap().unwrap().file.project, "tool");
    }

    #[test]
    fn malformed_files_are_clear_errors() {
        let path = Path::new("/repo/.zafe.toml");
        for (text, needle) in [
            ("project = ", "parse error"),
            ("environment = \"dev\"", "project"),
            ("project = \"myapp\"\nenviroment = \"dev\"", "enviroment"),
            ("project = \"My App\"", "not a project slug"),
            (
                "project = \"a\"\nenvironment = \"Prod\"",
                "not an environment name",
            ),
            ("project = \"a\"\nserver = \"zafe.example.com\"", "http"),
            ("project = 3", "invalid type"),
        ] {
            let err = parse(path, text).unwrap_err().to_string();
            assert!(err.contains("/repo/.zafe.toml"), "{err}");
            assert!(err.to_lowercase().contains(needle), "{text:?}: {err}");
        }
        let ok = parse(
            path,
            "project = \"a\"\nenvironment = \"prod\"\nserver = \"https://z:8200\"",
        )
        .unwrap();
        assert_eq!(ok.server.as_deref(), Some("https://z:8200"));
    }
}
