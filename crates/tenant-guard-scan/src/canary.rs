//! Canary secrets: known values searched for in their raw form and in every
//! encoding a build is likely to apply to them (base64 at any alignment, hex,
//! URL-encoding, JSON and shell escapes), inside archives and gzip streams
//! too. `tenant-guard cross` plants them and looks for them across tenants.
//!
//! Every encoded form of every canary goes into one Aho-Corasick automaton.
//! A base64 encoding depends on where the value starts inside the encoded
//! run (its offset modulo 3), and its first and last characters depend on
//! the neighbouring bytes: for each of the three offsets only the stable
//! middle part — the characters made of the value's bits alone — is searched.

use std::collections::HashMap;
use std::io::{self, Read};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::archive::{ArchiveLimits, visit_bytes};
use crate::finding::Finding;
use crate::walk::Visitor;

/// The shortest canary accepted: shorter values would make the stable part
/// of their base64 forms too short to be found without false positives.
pub const MIN_CANARY_LEN: usize = 12;

/// How a canary was written where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Encoding {
    /// As is.
    Raw,
    /// Base64, standard alphabet, with or without padding, at any alignment.
    Base64,
    /// Base64, URL-safe alphabet, with or without padding, at any alignment.
    Base64Url,
    /// Hexadecimal, lower case.
    HexLower,
    /// Hexadecimal, upper case.
    HexUpper,
    /// Percent-encoding of every byte that is not unreserved (RFC 3986).
    UrlEncoded,
    /// Percent-encoding of every byte.
    UrlEncodedAll,
    /// A JSON string escape.
    Json,
    /// A shell string escape (single-quoted, double-quoted or backslashed).
    Shell,
}

impl Encoding {
    /// Every encoding, in the order forms are attributed (a form equal to an
    /// earlier one is attributed to the earlier encoding).
    pub const ALL: [Encoding; 9] = [
        Encoding::Raw,
        Encoding::HexLower,
        Encoding::HexUpper,
        Encoding::Base64,
        Encoding::Base64Url,
        Encoding::UrlEncoded,
        Encoding::UrlEncodedAll,
        Encoding::Json,
        Encoding::Shell,
    ];

    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Base64 => "base64",
            Encoding::Base64Url => "base64url",
            Encoding::HexLower => "hex",
            Encoding::HexUpper => "HEX",
            Encoding::UrlEncoded => "url-encoded",
            Encoding::UrlEncodedAll => "url-encoded-all",
            Encoding::Json => "json-escaped",
            Encoding::Shell => "shell-escaped",
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A canary: a value that must never appear where it does not belong.
/// `Debug` never shows the value.
pub struct Canary {
    /// Who the value belongs to (a tenant slug).
    pub owner: String,
    /// Its name (`api-token`).
    pub name: String,
    value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Canary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canary")
            .field("owner", &self.owner)
            .field("name", &self.name)
            .field(
                "value",
                &format_args!("[REDACTED; {} bytes]", self.value.len()),
            )
            .finish()
    }
}

impl Canary {
    /// A canary of `owner` named `name`.
    pub fn new(owner: impl Into<String>, name: impl Into<String>, value: Vec<u8>) -> Canary {
        Canary {
            owner: owner.into(),
            name: name.into(),
            value: Zeroizing::new(value),
        }
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }
}

fn percent(bytes: &[u8], all: bool, upper: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &b in bytes {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if unreserved && !all {
            out.push(b);
        } else if upper {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

/// The stable middle of the base64 encoding of `value` starting `offset`
/// bytes (0 to 2) into an encoded run: the characters made only of the
/// value's bits, whatever the neighbouring bytes and the padding.
fn base64_middle(value: &[u8], offset: usize, url: bool) -> Vec<u8> {
    let mut input = vec![0u8; offset];
    input.extend_from_slice(value);
    let encoded = if url {
        URL_SAFE_NO_PAD.encode(&input)
    } else {
        STANDARD_NO_PAD.encode(&input)
    };
    let first = (8 * offset).div_ceil(6);
    let end = (8 * (offset + value.len())) / 6;
    encoded.as_bytes()[first..end.max(first)].to_vec()
}

fn shell_forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut single = Vec::new();
    let mut double = Vec::new();
    let mut backslashed = Vec::new();
    for &b in value {
        if b == b'\'' {
            single.extend_from_slice(b"'\\''");
        } else {
            single.push(b);
        }
        if matches!(b, b'"' | b'\\' | b'$' | b'`') {
            double.push(b'\\');
        }
        double.push(b);
        let safe = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'_' | b'-' | b'.' | b'/' | b':' | b'@' | b'%' | b'+' | b',' | b'='
            );
        if !safe && b.is_ascii_graphic() {
            backslashed.push(b'\\');
        }
        backslashed.push(b);
    }
    vec![single, double, backslashed]
}

fn json_forms(value: &[u8]) -> Vec<Vec<u8>> {
    let Ok(text) = std::str::from_utf8(value) else {
        return Vec::new();
    };
    let Ok(quoted) = serde_json::to_string(text) else {
        return Vec::new();
    };
    let inner = quoted[1..quoted.len() - 1].to_string();
    let slashed = inner.replace('/', "\\/");
    // Every non-alphanumeric ASCII character as \u00XX (some serializers).
    let mut unicode = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            unicode.push(c);
        } else if c.is_ascii() {
            unicode.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            unicode.push(c);
        }
    }
    vec![
        inner.into_bytes(),
        slashed.into_bytes(),
        unicode.into_bytes(),
    ]
}

/// Every searched form of `value` in `encoding` (base64: the stable middles
/// of the three alignments).
pub fn encoded_forms(value: &[u8], encoding: Encoding) -> Vec<Vec<u8>> {
    match encoding {
        Encoding::Raw => vec![value.to_vec()],
        Encoding::HexLower => vec![hex::encode(value).into_bytes()],
        Encoding::HexUpper => vec![hex::encode_upper(value).into_bytes()],
        Encoding::Base64 => (0..3).map(|o| base64_middle(value, o, false)).collect(),
        Encoding::Base64Url => (0..3).map(|o| base64_middle(value, o, true)).collect(),
        Encoding::UrlEncoded => vec![percent(value, false, true), percent(value, false, false)],
        Encoding::UrlEncodedAll => vec![percent(value, true, true), percent(value, true, false)],
        Encoding::Json => json_forms(value),
        Encoding::Shell => shell_forms(value),
    }
}

/// A set of canaries compiled into one automaton over all their forms.
#[derive(Debug)]
pub struct CanarySet {
    canaries: Vec<Canary>,
    automaton: AhoCorasick,
    /// Pattern index → (canary index, encoding).
    patterns: Vec<(usize, Encoding)>,
    max_len: usize,
}

/// Where a canary was found in one content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryMatch {
    /// Index of the canary in [`CanarySet::canaries`].
    pub canary: usize,
    /// The form it was found in.
    pub encoding: Encoding,
    /// Byte offset of the match in the content.
    pub offset: u64,
    /// 1-based line of the match.
    pub line: u64,
}

impl CanarySet {
    /// Compiles `canaries`. Values shorter than [`MIN_CANARY_LEN`] are refused.
    pub fn new(canaries: Vec<Canary>) -> Result<CanarySet, crate::Error> {
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut forms: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut patterns = Vec::new();
        for (i, c) in canaries.iter().enumerate() {
            if c.value.len() < MIN_CANARY_LEN {
                return Err(crate::Error::Parse {
                    origin: format!("canary {}/{}", c.owner, c.name),
                    message: format!("shorter than {MIN_CANARY_LEN} bytes"),
                });
            }
            for encoding in Encoding::ALL {
                for form in encoded_forms(&c.value, encoding) {
                    if form.len() < MIN_CANARY_LEN || seen.contains_key(&form) {
                        continue;
                    }
                    seen.insert(form.clone(), patterns.len());
                    patterns.push((i, encoding));
                    forms.push(Zeroizing::new(form));
                }
            }
        }
        // Forms are dropped (and zeroed) below; the map's copies too.
        for (mut k, _) in seen.drain() {
            zeroize::Zeroize::zeroize(&mut k);
        }
        let max_len = forms.iter().map(|f| f.len()).max().unwrap_or(1);
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(forms.iter().map(|f| f.as_slice()))
            .map_err(|e| crate::Error::Parse {
                origin: "canaries".into(),
                message: e.to_string(),
            })?;
        Ok(CanarySet {
            canaries,
            automaton,
            patterns,
            max_len,
        })
    }

    /// The canaries, in the order given.
    pub fn canaries(&self) -> &[Canary] {
        &self.canaries
    }

    /// Number of forms searched.
    pub fn forms(&self) -> usize {
        self.patterns.len()
    }

    /// A streaming search: feed content in pieces of any size.
    pub fn stream(&self) -> CanaryStream<'_> {
        CanaryStream {
            set: self,
            tail: Vec::new(),
            tail_start: 0,
            tail_lines: 0,
            hits: Vec::new(),
        }
    }

    /// Every canary in `bytes` (not descending into archives).
    pub fn find_in(&self, bytes: &[u8]) -> Vec<CanaryMatch> {
        let mut s = self.stream();
        s.feed(bytes);
        s.finish()
    }
}

/// A search over content fed in pieces; a match across two pieces is found.
#[derive(Debug)]
pub struct CanaryStream<'a> {
    set: &'a CanarySet,
    tail: Vec<u8>,
    /// Offset of `tail[0]` in the content.
    tail_start: u64,
    /// Line breaks before `tail[0]`.
    tail_lines: u64,
    hits: Vec<CanaryMatch>,
}

impl CanaryStream<'_> {
    /// Searches the next piece of content.
    pub fn feed(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let old = self.tail.len();
        let mut buf = std::mem::take(&mut self.tail);
        buf.extend_from_slice(data);
        for m in self.set.automaton.find_overlapping_iter(&buf[..]) {
            // A match ending in the old tail was reported by the previous piece.
            if m.end() <= old {
                continue;
            }
            let (canary, encoding) = self.set.patterns[m.pattern().as_usize()];
            let lines = memchr::memchr_iter(b'\n', &buf[..m.start()]).count() as u64;
            self.hits.push(CanaryMatch {
                canary,
                encoding,
                offset: self.tail_start + m.start() as u64,
                line: self.tail_lines + lines + 1,
            });
        }
        let keep = (self.set.max_len.saturating_sub(1)).min(buf.len());
        let cut = buf.len() - keep;
        self.tail_lines += memchr::memchr_iter(b'\n', &buf[..cut]).count() as u64;
        self.tail_start += cut as u64;
        self.tail = buf.split_off(cut);
    }

    /// Reads `reader` to its end, searching it.
    pub fn read_all(&mut self, reader: &mut dyn Read) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            self.feed(&buf[..n]);
        }
    }

    /// The matches found, by offset.
    pub fn finish(mut self) -> Vec<CanaryMatch> {
        self.hits.sort_by_key(|m| (m.offset, m.canary));
        self.hits
    }
}

struct FindVisitor<'a> {
    set: &'a CanarySet,
    found: Vec<(String, CanaryMatch)>,
}

impl Visitor for FindVisitor<'_> {
    fn content(&mut self, path: &str, content: &mut dyn Read) -> io::Result<()> {
        let mut s = self.set.stream();
        let result = s.read_all(content);
        self.found
            .extend(s.finish().into_iter().map(|m| (path.to_string(), m)));
        result
    }

    fn notice(&mut self, _finding: Finding) {}
}

/// Every canary of `set` in `bytes` shown as `display`, descending into
/// archives and gzip streams: (path with `!/` before entries, match).
pub fn find_canaries(
    set: &CanarySet,
    display: &str,
    bytes: &[u8],
    limits: ArchiveLimits,
) -> Vec<(String, CanaryMatch)> {
    let mut v = FindVisitor {
        set,
        found: Vec::new(),
    };
    visit_bytes(display, bytes, limits, &mut v);
    v.found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[&[u8]]) -> CanarySet {
        CanarySet::new(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| Canary::new("t", format!("c{i}"), v.to_vec()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn base64_at_every_alignment_and_padding() {
        let value = b"canary-value-0123456789";
        let s = set(&[value]);
        for prefix in 0..6usize {
            for suffix in 0..4usize {
                let mut input = vec![b'#'; prefix];
                input.extend_from_slice(value);
                input.extend(std::iter::repeat_n(b'!', suffix));
                for e in [
                    &base64::engine::general_purpose::STANDARD,
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                ] {
                    let text = format!("x={} y", e.encode(&input));
                    let hits = s.find_in(text.as_bytes());
                    assert_eq!(hits.len(), 1, "{prefix} {suffix} {text}");
                }
            }
        }
    }

    #[test]
    fn other_encodings_and_lines() {
        let value = b"p@ss\"w'rd/$x+y 0123";
        let s = set(&[value]);
        let cases: Vec<(Vec<u8>, Encoding)> = vec![
            (value.to_vec(), Encoding::Raw),
            (hex::encode(value).into_bytes(), Encoding::HexLower),
            (hex::encode_upper(value).into_bytes(), Encoding::HexUpper),
            (percent(value, false, true), Encoding::UrlEncoded),
            (percent(value, true, false), Encoding::UrlEncodedAll),
            (
                serde_json::to_string(std::str::from_utf8(value).unwrap())
                    .unwrap()
                    .trim_matches('"')
                    .as_bytes()
                    .to_vec(),
                Encoding::Json,
            ),
            (shell_forms(value).remove(0), Encoding::Shell),
        ];
        for (form, enc) in cases {
            let mut text = b"line one\nline two ".to_vec();
            text.extend_from_slice(&form);
            let hits = s.find_in(&text);
            assert_eq!(hits.len(), 1, "{enc}");
            assert_eq!(
                (hits[0].encoding, hits[0].line, hits[0].offset),
                (enc, 2, 18)
            );
        }
    }

    #[test]
    fn matches_across_pieces_are_found_once() {
        let value = b"canary-value-0123456789";
        let s = set(&[value]);
        let mut text = vec![b'.'; 100];
        text.extend_from_slice(value);
        text.extend_from_slice(&[b'.'; 100]);
        for piece in [1, 3, 7, 50, 1000] {
            let mut st = s.stream();
            for c in text.chunks(piece) {
                st.feed(c);
            }
            let hits = st.finish();
            assert_eq!(hits.len(), 1, "{piece}");
            assert_eq!(hits[0].offset, 100);
        }
    }

    #[test]
    fn short_values_are_refused_and_debug_is_redacted() {
        assert!(CanarySet::new(vec![Canary::new("t", "c", b"short".to_vec())]).is_err());
        let c = Canary::new("t", "c", b"canary-value-0123456789".to_vec());
        assert!(!format!("{c:?}").contains("canary-value"));
    }
}
