//! Envelope encryption: AES-256-GCM under random 96-bit nonces, keys that
//! zeroize on drop, Argon2id key derivation and key files.
//!
//! Every ciphertext is bound to where it lives by its associated data
//! ([`Aad`]): moving a ciphertext, nonce or wrapped key to another row,
//! tenant, version or key version makes it fail to open.

use std::fs;
use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Key length in bytes (AES-256).
pub(crate) const KEY_LEN: usize = 32;
/// Nonce length in bytes (96 bits, the GCM standard).
pub(crate) const NONCE_LEN: usize = 12;
/// Salt length for Argon2id.
pub(crate) const SALT_LEN: usize = 16;

/// A 256-bit symmetric key. The bytes and the AES key schedule are zeroized
/// on drop.
pub(crate) struct Key {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    cipher: Aes256Gcm,
}

impl Key {
    /// A fresh random key from the operating system's CSPRNG.
    pub(crate) fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Key::from_bytes(bytes)
    }

    fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let cipher = Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(bytes.as_ref()));
        Key { bytes, cipher }
    }

    /// Encrypts `plaintext` under a fresh random nonce. Returns the nonce and
    /// the ciphertext (with its 16-byte tag).
    pub(crate) fn seal(&self, aad: &Aad, plaintext: &[u8]) -> ([u8; NONCE_LEN], Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad.0,
                },
            )
            // aes-gcm fails only for inputs over 64 GiB, far above every limit.
            .expect("AES-GCM encryption of a bounded input cannot fail");
        (nonce, ciphertext)
    }

    /// Decrypts and authenticates. `None` when anything does not match.
    pub(crate) fn open(
        &self,
        aad: &Aad,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        if nonce.len() != NONCE_LEN {
            return None;
        }
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad.0,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }

    /// Wraps `key` under this key: `nonce || ciphertext`.
    pub(crate) fn wrap(&self, aad: &Aad, key: &Key) -> Vec<u8> {
        let (nonce, ct) = self.seal(aad, key.bytes.as_ref());
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Unwraps a key produced by [`Key::wrap`]. `None` when it does not open.
    pub(crate) fn unwrap_key(&self, aad: &Aad, wrapped: &[u8]) -> Option<Key> {
        if wrapped.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = wrapped.split_at(NONCE_LEN);
        let plain = self.open(aad, nonce, ct)?;
        let bytes: [u8; KEY_LEN] = plain.as_slice().try_into().ok()?;
        Some(Key::from_bytes(Zeroizing::new(bytes)))
    }
}

/// Associated data: a domain label and length-prefixed fields, so that no two
/// different field lists encode to the same bytes.
pub(crate) struct Aad(Vec<u8>);

impl Aad {
    /// Starts associated data for one kind of object.
    pub(crate) fn new(label: &str) -> Self {
        let mut a = Aad(Vec::with_capacity(96));
        a.field(label.as_bytes());
        a
    }

    /// Appends a field.
    pub(crate) fn field(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u32::try_from(bytes.len()).expect("AAD fields are short");
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    /// Appends an integer field.
    pub(crate) fn int(&mut self, n: u64) -> &mut Self {
        self.field(&n.to_be_bytes())
    }

    /// Finishes the builder.
    pub(crate) fn done(&mut self) -> Aad {
        Aad(std::mem::take(&mut self.0))
    }
}

/// Argon2id cost parameters, stored beside the salt and the wrapped root key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// RFC 9106's second recommended option: 64 MiB, 3 passes (with one lane).
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// Derives a key-encryption key from a passphrase.
    pub(crate) fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<Key> {
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(KEY_LEN))
            .map_err(|e| Error::InvalidArgument(format!("Argon2id parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(passphrase, salt, out.as_mut())
            .map_err(|e| Error::InvalidArgument(format!("Argon2id: {e}")))?;
        Ok(Key::from_bytes(out))
    }
}

/// A fresh random salt.
pub(crate) fn random_salt() -> Vec<u8> {
    let mut salt = vec![0u8; SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    salt
}

/// Reads a key file: 64 hexadecimal characters (surrounding white space is
/// ignored).
pub(crate) fn read_key_file(path: &Path) -> Result<Key> {
    let bad = |reason: String| Error::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let text = Zeroizing::new(fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?);
    let trimmed = text.trim_ascii();
    if trimmed.len() != 2 * KEY_LEN {
        return Err(bad(format!(
            "a key file holds {} hexadecimal characters, this one holds {}",
            2 * KEY_LEN,
            trimmed.len()
        )));
    }
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(trimmed, bytes.as_mut())
        .map_err(|_| bad("it holds a character that is not hexadecimal".into()))?;
    Ok(Key::from_bytes(bytes))
}

/// Creates a new key file with a random key, readable by its owner only.
/// Refuses to overwrite an existing file.
pub(crate) fn create_key_file(path: &Path) -> Result<()> {
    let bad = |reason: String| Error::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let key = Key::generate();
    let mut text = Zeroizing::new(hex::encode(key.bytes.as_ref()));
    text.push('\n');
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| bad(format!("cannot create it: {e}")))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| bad(format!("cannot write it: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aad(x: u64) -> Aad {
        Aad::new("test").int(x).done()
    }

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let k = Key::generate();
        let (n, ct) = k.seal(&aad(1), b"value");
        assert_eq!(k.open(&aad(1), &n, &ct).unwrap().as_slice(), b"value");
        assert!(k.open(&aad(2), &n, &ct).is_none(), "other AAD must fail");
        assert!(
            Key::generate().open(&aad(1), &n, &ct).is_none(),
            "other key must fail"
        );
        let (n2, _) = k.seal(&aad(1), b"value");
        assert_ne!(n, n2, "nonces are fresh");
    }

    #[test]
    fn aad_fields_are_unambiguous() {
        let a = Aad::new("l").field(b"ab").field(b"c").done();
        let b = Aad::new("l").field(b"a").field(b"bc").done();
        assert_ne!(a.0, b.0);
    }

    #[test]
    fn wrap_unwrap() {
        let kek = Key::generate();
        let dk = Key::generate();
        let w = kek.wrap(&aad(7), &dk);
        let back = kek.unwrap_key(&aad(7), &w).unwrap();
        assert_eq!(back.bytes.as_ref(), dk.bytes.as_ref());
        assert!(kek.unwrap_key(&aad(8), &w).is_none());
    }

    #[test]
    fn argon2id_is_deterministic_per_salt() {
        let p = KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let a = p.derive(b"pw", b"saltsaltsaltsalt").unwrap();
        let b = p.derive(b"pw", b"saltsaltsaltsalt").unwrap();
        let c = p.derive(b"pw", b"other-salt-16byt").unwrap();
        assert_eq!(a.bytes.as_ref(), b.bytes.as_ref());
        assert_ne!(a.bytes.as_ref(), c.bytes.as_ref());
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        create_key_file(&p).unwrap();
        assert!(create_key_file(&p).is_err(), "never overwrites");
        read_key_file(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        fs::write(&p, "abc").unwrap();
        assert!(matches!(read_key_file(&p), Err(Error::KeyFile { .. })));
        fs::write(&p, "z".repeat(64)).unwrap();
        assert!(matches!(read_key_file(&p), Err(Error::KeyFile { .. })));
    }
}
