//! The Secret MCP token format.
//!
//! A token is recognizable and self-checking, in the manner GitHub uses for its
//! own tokens, so that a leaked token can be found by a scanner with no false
//! positives and a mistyped token is rejected before any lookup:
//!
//! ```text
//! smcp<kind>_<43 random base62 characters><6 base62 checksum characters>
//! ```
//!
//! * `<kind>` is `t` for a tenant token and `o` for an operator token.
//! * The 43 random characters carry 43 × log2(62) ≈ 256.03 bits of entropy.
//! * The checksum is the CRC32 (IEEE) of everything before it, written in
//!   base62 (`0-9A-Za-z`), most significant digit first, left-padded with `0`.
//!
//! The whole token is [`TOKEN_LEN`] (55) ASCII characters and matches
//! [`TOKEN_PATTERN`].
//!
//! ```
//! use smcp_token::{generate, parse, TokenKind, FormatError};
//!
//! let token = generate(TokenKind::Tenant);
//! assert_eq!(parse(&token), Ok(TokenKind::Tenant));
//!
//! // A single typo is caught by the checksum.
//! let mut typo = token.to_string();
//! let last = typo.pop().unwrap();
//! typo.push(if last == 'a' { 'b' } else { 'a' });
//! assert_eq!(parse(&typo), Err(FormatError::ChecksumMismatch));
//! ```
#![forbid(unsafe_code)]

use rand::Rng;
use zeroize::Zeroizing;

/// Number of random base62 characters in a token (≥ 256 bits).
pub const RANDOM_LEN: usize = 43;
/// Number of base62 checksum characters at the end of a token.
pub const CHECKSUM_LEN: usize = 6;
/// Length of the `smcp<kind>_` prefix.
pub const PREFIX_LEN: usize = 6;
/// Total length of a token.
pub const TOKEN_LEN: usize = PREFIX_LEN + RANDOM_LEN + CHECKSUM_LEN;
/// A regular expression (Rust `regex` and PCRE compatible) that matches the
/// shape of a token. The checksum must still be verified with [`parse`].
pub const TOKEN_PATTERN: &str = r"smcp[to]_[0-9A-Za-z]{49}";

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Which principal a token authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenKind {
    /// A token bound to exactly one tenant.
    Tenant,
    /// An operator token: manages scopes and tokens.
    Operator,
}

impl TokenKind {
    /// The prefix every token of this kind starts with, e.g. `smcpt_`.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Tenant => "smcpt_",
            TokenKind::Operator => "smcpo_",
        }
    }
}

/// Why a string is not a well-formed token. Never contains the token itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The string is not [`TOKEN_LEN`] characters long.
    #[error("a token is {TOKEN_LEN} characters long, this one has {0}")]
    WrongLength(usize),
    /// The string does not start with `smcpt_` or `smcpo_`.
    #[error("a token starts with `smcpt_` or `smcpo_`")]
    UnknownPrefix,
    /// A character outside `0-9A-Za-z` after the prefix.
    #[error("a token holds only base62 characters after its prefix (position {0} is not)")]
    BadCharacter(usize),
    /// The checksum does not match: the token was mistyped or truncated.
    #[error("the token's checksum does not match (mistyped or altered token)")]
    ChecksumMismatch,
}

/// Generates a fresh token of the given kind from the operating system's CSPRNG.
pub fn generate(kind: TokenKind) -> Zeroizing<String> {
    let mut rng = rand::rngs::OsRng;
    let mut token = Zeroizing::new(String::with_capacity(TOKEN_LEN));
    token.push_str(kind.prefix());
    for _ in 0..RANDOM_LEN {
        token.push(ALPHABET[rng.gen_range(0..ALPHABET.len())] as char);
    }
    let sum = checksum(token.as_bytes());
    token.push_str(std::str::from_utf8(&sum).expect("base62 is ASCII"));
    token
}

/// Checks the shape and checksum of `s` and returns the token's kind.
pub fn parse(s: &str) -> Result<TokenKind, FormatError> {
    let bytes = s.as_bytes();
    if bytes.len() != TOKEN_LEN {
        return Err(FormatError::WrongLength(s.chars().count()));
    }
    let kind = match &bytes[..PREFIX_LEN] {
        b"smcpt_" => TokenKind::Tenant,
        b"smcpo_" => TokenKind::Operator,
        _ => return Err(FormatError::UnknownPrefix),
    };
    if let Some(pos) = bytes[PREFIX_LEN..]
        .iter()
        .position(|b| !b.is_ascii_alphanumeric())
    {
        return Err(FormatError::BadCharacter(PREFIX_LEN + pos));
    }
    let (head, sum) = bytes.split_at(TOKEN_LEN - CHECKSUM_LEN);
    if checksum(head).as_slice() != sum {
        return Err(FormatError::ChecksumMismatch);
    }
    Ok(kind)
}

/// Returns true when `s` is a well-formed token with a valid checksum.
pub fn is_valid(s: &str) -> bool {
    parse(s).is_ok()
}

/// The base62 CRC32 checksum of `head` (the prefix and random part).
fn checksum(head: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(head);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_tokens_parse_and_have_the_documented_shape() {
        let re_ok = |t: &str| {
            t.len() == TOKEN_LEN
                && (t.starts_with("smcpt_") || t.starts_with("smcpo_"))
                && t[PREFIX_LEN..].bytes().all(|b| b.is_ascii_alphanumeric())
        };
        for kind in [TokenKind::Tenant, TokenKind::Operator] {
            let t = generate(kind);
            assert!(re_ok(&t));
            assert_eq!(parse(&t), Ok(kind));
        }
    }

    #[test]
    fn two_tokens_differ() {
        assert_ne!(*generate(TokenKind::Tenant), *generate(TokenKind::Tenant));
    }

    #[test]
    fn checksum_fits_six_base62_digits() {
        // 62^6 > 2^32, so every CRC32 value has a distinct 6-digit encoding.
        assert!(62u64.pow(6) > u64::from(u32::MAX));
        assert_eq!(&checksum(b""), b"000000");
    }

    #[test]
    fn shape_errors_are_typed() {
        assert_eq!(parse("smcpt_abc"), Err(FormatError::WrongLength(9)));
        let t = generate(TokenKind::Tenant);
        let wrong_prefix = format!("ghp_xx{}", &t[PREFIX_LEN..]);
        assert_eq!(parse(&wrong_prefix), Err(FormatError::UnknownPrefix));
        let bad_char = format!("{}-{}", &t[..10], &t[11..]);
        assert_eq!(parse(&bad_char), Err(FormatError::BadCharacter(10)));
    }

    proptest! {
        #[test]
        fn any_single_substitution_is_rejected(pos in PREFIX_LEN..TOKEN_LEN, c in 0usize..62) {
            let t = generate(TokenKind::Operator);
            let mut b = t.as_bytes().to_vec();
            prop_assume!(b[pos] != ALPHABET[c]);
            b[pos] = ALPHABET[c];
            let s = String::from_utf8(b).unwrap();
            prop_assert_eq!(parse(&s), Err(FormatError::ChecksumMismatch));
        }

        #[test]
        fn any_adjacent_transposition_is_rejected(pos in PREFIX_LEN..TOKEN_LEN - 1) {
            let t = generate(TokenKind::Tenant);
            let mut b = t.as_bytes().to_vec();
            prop_assume!(b[pos] != b[pos + 1]);
            b.swap(pos, pos + 1);
            let s = String::from_utf8(b).unwrap();
            prop_assert_eq!(parse(&s), Err(FormatError::ChecksumMismatch));
        }
    }
}
