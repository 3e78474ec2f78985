//! The plaintext holder.

use std::fmt;

use zeroize::Zeroizing;

/// A secret value in memory.
///
/// The bytes are zeroized when the value is dropped. `Debug` prints
/// `Secret([REDACTED])`; there is deliberately no `Display`, so a value can
/// only reach an output through an explicit call to [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// The plaintext. Every call site is a place where a value leaves the
    /// vault's care: keep it out of logs and errors.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (not secret: it is visible in the stored ciphertext).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Secret {
    fn from(v: Vec<u8>) -> Self {
        Secret::new(v)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s.into_bytes())
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s.as_bytes().to_vec())
    }
}

impl From<Zeroizing<Vec<u8>>> for Secret {
    fn from(v: Zeroizing<Vec<u8>>) -> Self {
        Secret(v)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::from("hunter2-very-secret");
        let shown = format!("{s:?} {:#?}", s);
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("REDACTED"));
        assert_eq!(s.expose(), b"hunter2-very-secret");
    }
}
