//! The embedded default's admin token: `all` without `BUILDLOGS_ADMIN_TOKEN` keeps one in
//! `<data dir>/admin-token`, made up on its first start and reused after. A person finds it
//! where the quick start says (`cat data/admin-token`) instead of in a log line that changed
//! every run, and read links signed with it survive a restart.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The file's name in the data dir.
pub const FILE_NAME: &str = "admin-token";

/// The token and where it is kept.
pub struct StoredToken {
    pub token: String,
    pub path: PathBuf,
    /// Made up by this start (the file did not exist).
    pub created: bool,
}

/// The token in `data_dir`'s file, or a new one written there (readable by its owner only).
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<StoredToken> {
    let path = data_dir.join(FILE_NAME);
    if let Some(token) = read(&path)? {
        return Ok(StoredToken {
            token,
            path,
            created: false,
        });
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let token = buildlogs::traces::tokens::generate();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path);
    match file {
        Ok(mut file) => {
            file.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write the admin token to {}", path.display()))?;
            Ok(StoredToken {
                token,
                path,
                created: true,
            })
        }
        // Another process made it between our read and our create: use theirs.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match read(&path)? {
            Some(token) => Ok(StoredToken {
                token,
                path,
                created: false,
            }),
            None => anyhow::bail!("{} vanished while it was being read", path.display()),
        },
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// The token the file holds, `None` when there is no file; an empty file is an error (a token
/// nobody chose must not be the empty string).
fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            anyhow::ensure!(
                !token.is_empty(),
                "{} is empty: delete it (a new token is made) or set BUILDLOGS_ADMIN_TOKEN",
                path.display()
            );
            Ok(Some(token.to_owned()))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the admin token {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_token_is_made_once_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = super::load_or_create(&data).unwrap();
        assert!(first.created);
        assert_eq!(first.token.len(), 64);
        assert_eq!(first.path, data.join(super::FILE_NAME));
        let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = super::load_or_create(&data).unwrap();
        assert!(!again.created);
        assert_eq!(again.token, first.token);
    }

    #[test]
    fn a_token_written_by_hand_is_used_and_an_empty_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(super::FILE_NAME);
        std::fs::write(&path, "chosen-by-hand\n").unwrap();
        assert_eq!(
            super::load_or_create(dir.path()).unwrap().token,
            "chosen-by-hand"
        );
        std::fs::write(&path, "\n").unwrap();
        let err = super::load_or_create(dir.path()).err().unwrap().to_string();
        assert!(err.contains("is empty"), "{err}");
    }
}
