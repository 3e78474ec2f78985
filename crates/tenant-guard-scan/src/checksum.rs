//! Checksum validators that a rule can name in its `checksum` field.
//!
//! A validator runs on the reported secret after the regex matched; a secret
//! whose checksum does not verify is dropped, which removes typos, truncated
//! values and made-up documentation tokens without losing real ones.

use serde::{Deserialize, Serialize};

/// The validators built into the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Checksum {
    /// GitHub tokens `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`: 4-char prefix,
    /// 30 random base62 chars, then the CRC32 (IEEE) of those 30 chars in
    /// base62 (`0-9A-Za-z`), 6 digits, left-padded with `0`.
    Github,
    /// npm access tokens `npm_`: same construction as [`Checksum::Github`].
    Npm,
    /// Secret MCP tokens (`smcpt_`/`smcpo_`), checked with the `smcp-token`
    /// crate.
    SecretMcp,
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl Checksum {
    /// Every validator, for documentation and `rules list`.
    pub const ALL: [Checksum; 3] = [Checksum::Github, Checksum::Npm, Checksum::SecretMcp];

    /// The name used in rule files.
    pub fn name(self) -> &'static str {
        match self {
            Checksum::Github => "github",
            Checksum::Npm => "npm",
            Checksum::SecretMcp => "secret-mcp",
        }
    }

    /// Returns true when `secret` carries a valid checksum.
    pub fn verify(self, secret: &[u8]) -> bool {
        match self {
            Checksum::Github => prefixed_crc32(secret, |p| {
                matches!(p, b"ghp_" | b"gho_" | b"ghu_" | b"ghs_" | b"ghr_")
            }),
            Checksum::Npm => prefixed_crc32(secret, |p| p == b"npm_"),
            Checksum::SecretMcp => std::str::from_utf8(secret).is_ok_and(smcp_token::is_valid),
        }
    }
}

/// `<4-byte prefix><30 base62><6 base62 CRC32 of the 30>`.
fn prefixed_crc32(secret: &[u8], prefix_ok: impl Fn(&[u8]) -> bool) -> bool {
    if secret.len() != 40 || !prefix_ok(&secret[..4]) {
        return false;
    }
    let (body, sum) = secret[4..].split_at(30);
    if !body.iter().chain(sum).all(u8::is_ascii_alphanumeric) {
        return false;
    }
    base62_crc32(body) == sum
}

/// The CRC32 (IEEE) of `data` as 6 base62 digits, most significant first.
pub(crate) fn base62_crc32(data: &[u8]) -> [u8; 6] {
    let mut n = crc32fast::hash(data);
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_checksum(prefix: &str, body: &str) -> String {
        let sum = base62_crc32(body.as_bytes());
        format!("{prefix}{body}{}", std::str::from_utf8(&sum).unwrap())
    }

    #[test]
    fn github_accepts_computed_and_rejects_altered() {
        let token = with_checksum("ghp_", "M7H4jxUDDWHP4kZ6A4dxlQYsQIWJuq");
        assert!(Checksum::Github.verify(token.as_bytes()));
        let mut bad = token.clone().into_bytes();
        bad[10] = if bad[10] == b'a' { b'b' } else { b'a' };
        assert!(!Checksum::Github.verify(&bad));
        assert!(!Checksum::Github.verify(b"ghp_16C7e42F292c6912E7710c838347Ae178B4a")); // tenant-guard:allow ADR-001 (test value)
        assert!(!Checksum::Npm.verify(token.as_bytes()));
    }

    #[test]
    fn checksum_is_left_padded() {
        // A CRC below 62^5 needs a leading zero digit.
        let mut seen_pad = false;
        for i in 0..20_000u32 {
            let body = format!("{i:0>30}");
            if base62_crc32(body.as_bytes())[0] == b'0' {
                seen_pad = true;
                assert!(Checksum::Npm.verify(with_checksum("npm_", &body).as_bytes()));
                break;
            }
        }
        assert!(seen_pad);
    }

    #[test]
    fn secret_mcp_uses_the_token_crate() {
        let token = smcp_token::generate(smcp_token::TokenKind::Tenant);
        assert!(Checksum::SecretMcp.verify(token.as_bytes()));
        assert!(
            !Checksum::SecretMcp.verify(b"smcpt_0000000000000000000000000000000000000000000000000")
        );
    }
}
