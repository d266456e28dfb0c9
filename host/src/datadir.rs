//! The host's own directory (`server.data_dir`): the index, the spool, the
//! uploaded plugins and the host's secrets. Only the host's user may enter
//! it, and its keys live in files of their own, not in the index: a copy of
//! the index is neither a key to forge image URLs with nor a list of the
//! tenants' callback signing keys (those are sealed with `sealing.key`).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::index::Index;

/// Why the data directory or a secret in it cannot be used.
/// Why a sealed value does not open.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("a sealed value is not hex")]
    NotHex,
    #[error("a sealed value is too short")]
    TooShort,
    #[error("a sealed value does not open with data_dir/sealing.key (the key file was replaced?)")]
    WrongKey,
    #[error("a sealed value is not UTF-8")]
    NotUtf8,
}

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
    let key = key_file(&dir.join("url-signing.key"), || index.secret("url-signing-key"))?;
    // Once the file holds it, the index keeps no copy.
    index.forget_secret("url-signing-key")?;
    Ok(key)
}

/// The fleet's URL-signing key as this node last got it from the fleet
/// (`data_dir/fleet-url-signing.key`), if it has been in one.
pub fn fleet_url_signing_key(dir: &Path) -> Result<Option<Vec<u8>>, DataDirError> {
    let path = dir.join(FLEET_URL_KEY);
    match std::fs::read(&path) {
        Ok(key) if key.len() == 32 => Ok(Some(key)),
        Ok(key) => Err(DataDirError::BadKey(path, key.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DataDirError::Io(path, e)),
    }
}

/// Keeps the fleet's URL-signing key for starts without NATS (0600).
pub fn keep_fleet_url_signing_key(dir: &Path, key: &[u8]) -> Result<(), DataDirError> {
    write_new(&dir.join(FLEET_URL_KEY), key)
}

const FLEET_URL_KEY: &str = "fleet-url-signing.key";

/// A 32-byte key in a file of mode 0600: read, or made (from `earlier`, or
/// random) when there is none.
fn key_file(
    path: &Path,
    earlier: impl FnOnce() -> Result<Option<Vec<u8>>, crate::index::IndexError>,
) -> Result<Vec<u8>, DataDirError> {
    let key = match std::fs::read(path) {
        Ok(key) => key,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = match earlier()? {
                Some(old) => old,
                None => rand::random::<[u8; 32]>().to_vec(),
            };
            write_new(path, &key)?;
            key
        }
        Err(e) => return Err(DataDirError::Io(path.to_owned(), e)),
    };
    if key.len() != 32 {
        return Err(DataDirError::BadKey(path.to_owned(), key.len()));
    }
    private(path)?;
    Ok(key)
}

/// Seals secrets the host must keep in the index (tenants' callback
/// signing keys) with `data_dir/sealing.key` (0600): ChaCha20-Poly1305, a
/// random nonce per value, written `sealed:v1:{hex nonce+ciphertext}`.
pub struct Sealer(chacha20poly1305::ChaCha20Poly1305);

const SEALED: &str = "sealed:v1:";

impl Sealer {
    /// The host's sealer, its key made on first use.
    pub fn open_dir(dir: &Path) -> Result<Sealer, DataDirError> {
        let key = key_file(&dir.join("sealing.key"), || Ok(None))?;
        Ok(Sealer::with_key(&key))
    }

    /// A sealer with a key of its own (a fleet's, kept in its control plane).
    pub fn with_key(key: &[u8]) -> Sealer {
        use chacha20poly1305::KeyInit;
        Sealer(chacha20poly1305::ChaCha20Poly1305::new_from_slice(key).expect("a 32-byte key"))
    }

    pub fn seal(&self, plain: &str) -> String {
        use chacha20poly1305::aead::Aead;
        let nonce: [u8; 12] = rand::random();
        let sealed = self.0.encrypt(&nonce.into(), plain.as_bytes()).expect("sealing a short string cannot fail");
        format!("{SEALED}{}{}", hex::encode(nonce), hex::encode(sealed))
    }

    /// The plain text of a sealed value; a value an earlier version stored
    /// unsealed is returned as it is (`Ok((value, false))`).
    pub fn unseal(&self, value: &str) -> Result<(String, bool), SealError> {
        use chacha20poly1305::aead::Aead;
        let Some(hexed) = value.strip_prefix(SEALED) else { return Ok((value.to_owned(), false)) };
        let bytes = hex::decode(hexed).map_err(|_| SealError::NotHex)?;
        if bytes.len() < 12 + 16 {
            return Err(SealError::TooShort);
        }
        let (nonce, sealed) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("12 bytes");
        let plain = self.0.decrypt(&nonce.into(), sealed).map_err(|_| SealError::WrongKey)?;
        String::from_utf8(plain).map(|p| (p, true)).map_err(|_| SealError::NotUtf8)
    }
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

    #[test]
    fn sealed_values_open_with_their_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::open_dir(dir.path()).unwrap();
        assert_eq!(mode(&dir.path().join("sealing.key")), 0o600);
        let a = sealer.seal("notify-key-0123456789");
        let b = sealer.seal("notify-key-0123456789");
        assert!(a.starts_with("sealed:v1:") && a != b, "a fresh nonce each time");
        assert!(!a.contains("notify-key"));
        assert_eq!(sealer.unseal(&a).unwrap(), ("notify-key-0123456789".to_string(), true));
        assert_eq!(
            Sealer::open_dir(dir.path()).unwrap().unseal(&b).unwrap().0,
            "notify-key-0123456789",
            "same key file"
        );
        assert_eq!(sealer.unseal("plain-from-before").unwrap(), ("plain-from-before".to_string(), false));
        let other = Sealer::with_key(&[1; 32]);
        assert!(other.unseal(&a).unwrap_err().to_string().contains("does not open"));
        let mut tampered = a.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert!(sealer.unseal(&tampered).is_err(), "a changed byte does not open");
    }
}
