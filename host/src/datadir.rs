//! The host's own directory (`server.data_dir`): the index, the spool, the
//! uploaded plugins and the host's secrets. Only the host's user may enter
//! it, and the URL-signing key lives in a file of its own, not in the index
//! (a copy of the index is not a key to forge image URLs with).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::index::Index;

/// Why the data directory or a secret in it cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data_dir {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(
        "data_dir {0} is writable by other users (mode {1:o}): they could replace the index, plugins or keys; make it 0700 (chmod 700) or point data_dir elsewhere"
    )]
    Writable(PathBuf, u32),
    #[error(
        "{0}: {1} bytes, a key is 32: the file is damaged; remove it to make a new key (signed URLs given out become invalid)"
    )]
    BadKey(PathBuf, usize),
    #[error("the URL-signing key cannot be moved out of the index: {0}")]
    Index(#[from] crate::index::IndexError),
}

/// Creates `dir` (mode 0700) or checks it: refused when others may write
/// to it; made 0700 when others may only read it (logged).
pub fn prepare(dir: &Path) -> Result<(), DataDirError> {
    let io = |e| DataDirError::Io(dir.to_owned(), e);
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DataDirError::Writable(dir.to_owned(), mode));
    }
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        tracing::info!(data_dir = %dir.display(), was = format!("{mode:o}"), "data_dir was readable by other users; made 0700");
    }
    Ok(())
}

/// Makes a file the host created (the index) readable by the host's user only.
pub fn private(file: &Path) -> Result<(), DataDirError> {
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| DataDirError::Io(file.to_owned(), e))
}

/// The URL-signing key: `data_dir/url-signing.key` (0600). Made on first
/// use; a key an earlier version kept in the index is moved into the file,
/// so URLs it signed stay valid.
pub fn url_signing_key(dir: &Path, index: &Index) -> Result<Vec<u8>, DataDirError> {
    let path = dir.join("url-signing.key");
    let key = match std::fs::read(&path) {
        Ok(key) => key,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = match index.secret("url-signing-key")? {
                Some(old) => old,
                None => rand::random::<[u8; 32]>().to_vec(),
            };
            write_new(&path, &key)?;
            key
        }
        Err(e) => return Err(DataDirError::Io(path, e)),
    };
    if key.len() != 32 {
        return Err(DataDirError::BadKey(path, key.len()));
    }
    private(&path)?;
    // Once the file holds it, the index keeps no copy.
    index.forget_secret("url-signing-key")?;
    Ok(key)
}

/// Writes a new file of mode 0600 and syncs it (through a temporary name:
/// a crash leaves the whole key or none).
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = path.with_extension("part");
    let io = |e| DataDirError::Io(path.to_owned(), e);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_directory_is_private_and_a_writable_one_refused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("data");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "tightened");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare(&dir).unwrap_err().to_string();
        assert!(e.contains("writable by other users (mode 777)"), "{e}");
    }

    #[test]
    fn the_key_moves_out_of_the_index_and_stays_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        index.put_secret_for_test("url-signing-key", &[9u8; 32]);
        let key = url_signing_key(dir.path(), &index).unwrap();
        assert_eq!(key, vec![9u8; 32], "the earlier version's key, so its URLs stay valid");
        assert_eq!(index.secret("url-signing-key").unwrap(), None, "no copy left in the index");
        assert_eq!(mode(&dir.path().join("url-signing.key")), 0o600);
        assert_eq!(url_signing_key(dir.path(), &index).unwrap(), key, "read back");

        let fresh = tempfile::tempdir().unwrap();
        let index = Index::open(&fresh.path().join("index.redb")).unwrap();
        let made = url_signing_key(fresh.path(), &index).unwrap();
        assert_eq!(made.len(), 32);
        assert_ne!(made, key);
        std::fs::write(fresh.path().join("url-signing.key"), b"short").unwrap();
        assert!(matches!(url_signing_key(fresh.path(), &index), Err(DataDirError::BadKey(..))));
    }
}
