//! Fingerprints of real secrets: a file that lets the scanner recognise a
//! tenant's secret values, raw and in the encodings of [`Encoding`], without
//! containing them (the design and what the file reveals are in
//! `docs/SCANNER.md`, "Fingerprints of vault secrets").
//!
//! For every searched form of a value (its raw bytes, hex, base64 at each
//! alignment, URL-, JSON- and shell-escaped: the forms of
//! [`encoded_forms`]) the file holds:
//! - a keyed MAC of the whole form (HMAC-SHA-256, first 128 bits), which
//!   confirms a candidate;
//! - [`STRIDE`] short keyed tags, one per [`GRAM`]-byte window starting at
//!   offsets `0..STRIDE` of the form: the prefilter. The scanner hashes one
//!   window every [`STRIDE`] bytes of the content, so any occurrence of a
//!   form has exactly one of its first [`STRIDE`] windows hashed, and tests
//!   it against an in-memory filter built from the tags. A tag keeps only
//!   as many bits as the prefilter needs for the number of windows in the
//!   file (`tag_bits`: about log2(windows) + 12).
//!
//! All tags come from the first `GRAM + STRIDE - 1` = 15 bytes of each form,
//! which depend on at most the first 15 bytes of the value: that is the
//! prefix information the file gives away. Values shorter than
//! [`MIN_FINGERPRINT_LEN`] are not fingerprinted; the file lists them as
//! skipped (path and version only) and the scanner says so.

use std::borrow::Cow;
use std::io::{self, BufRead, Write};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::canary::{Encoding, encoded_forms};

/// The `format` field of a fingerprint file's header line.
pub const FINGERPRINT_FORMAT: &str = "tenant-guard-fingerprints";
/// The format version written and read.
pub const FINGERPRINT_FORMAT_VERSION: u32 = 1;
/// Bytes hashed into one prefilter tag.
pub const GRAM: usize = 8;
/// One window in this many bytes of the content is hashed.
pub const STRIDE: usize = 8;
// The scan reads the content's 8-byte words as its windows.
const _: () = assert!(STRIDE == GRAM);
/// The shortest value fingerprinted: the first `GRAM + STRIDE - 1` (15)
/// bytes are described by the tags, so at least 13 bytes are described only
/// by the MAC, which can be attacked only by guessing them.
pub const MIN_FINGERPRINT_LEN: usize = 28;
/// Bytes kept of each form's MAC.
const MAC_LEN: usize = 16;
/// Extra tag bits beyond log2(windows): the filter takes three 6-bit
/// positions and its word index (log2(windows) - 2 bits) from a tag, and an
/// unrelated window that passes the filter matches a stored tag about once
/// in 2^16 times.
const TAG_MARGIN_BITS: u32 = 16;
/// Bits of a window's hash that choose the bits tested in a filter word.
const FILTER_BIT_BITS: u32 = 18;
/// Bounds of the number of 64-bit words of the in-memory filter, as powers
/// of two (2^20 words: 8 MiB).
const FILTER_WORD_BITS: (u32, u32) = (6, 20);
/// The narrowest tag: the filter takes a word index and two 6-bit bit
/// positions from it.
const MIN_TAG_BITS: u32 = FILTER_WORD_BITS.0 + FILTER_BIT_BITS;

type HmacSha256 = Hmac<Sha256>;

/// Keys derived from the file's key: the window hash's two constants and the
/// MAC key.
struct Keys {
    xor: u64,
    mul: u64,
    mac: HmacSha256,
}

impl Keys {
    fn derive(key: &[u8; 32]) -> Keys {
        let part = |label: &[u8]| -> Zeroizing<[u8; 32]> {
            let mut h = Sha256::new();
            h.update(b"tenant-guard fingerprints v1\0");
            h.update(label);
            h.update(key);
            Zeroizing::new(h.finalize().into())
        };
        let word = |label: &[u8]| {
            let bytes = part(label);
            u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
        };
        let mac_key = part(b"mac");
        Keys {
            xor: word(b"xor"),
            // Odd, so that the multiplication is a bijection.
            mul: word(b"mul") | 1,
            mac: HmacSha256::new_from_slice(&mac_key[..]).expect("HMAC takes any key length"),
        }
    }

    /// The 64-bit hash of one window; tags and bitmap indices are its top bits.
    #[inline(always)]
    fn window(&self, window: u64) -> u64 {
        (window ^ self.xor).wrapping_mul(self.mul)
    }

    fn mac(&self, form: &[u8]) -> [u8; MAC_LEN] {
        let full = self.mac.clone().chain_update(form).finalize().into_bytes();
        full[..MAC_LEN].try_into().expect("16 bytes")
    }
}

fn read_window(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + GRAM].try_into().expect("GRAM bytes"))
}

/// The header line of a fingerprint file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    tenant: String,
    created_at: String,
    /// Hex of the 32-byte key the hashes are keyed with.
    key: String,
    gram: usize,
    stride: usize,
    tag_bits: u32,
    min_length: usize,
    versions: usize,
    skipped: usize,
}

/// One line after the header: a fingerprinted or a skipped version.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    path: String,
    version: u64,
    /// The value's length in bytes.
    length: usize,
    #[serde(default, borrow, skip_serializing_if = "Vec::is_empty")]
    forms: Vec<FormLine<'a>>,
    /// Why the version was not fingerprinted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    skipped: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FormLine<'a> {
    #[serde(borrow)]
    encoding: Cow<'a, str>,
    length: usize,
    /// Hex of the MAC's first 16 bytes.
    #[serde(borrow)]
    mac: Cow<'a, str>,
    /// Hex of the tags of the windows at offsets 0..STRIDE.
    #[serde(borrow)]
    tags: Vec<Cow<'a, str>>,
}

/// What [`FingerprintBuilder::add`] did with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Added {
    /// The value's forms were fingerprinted.
    Fingerprinted {
        /// How many distinct forms.
        forms: usize,
    },
    /// The value is shorter than [`MIN_FINGERPRINT_LEN`]: recorded as skipped.
    TooShort,
}

struct BuiltForm {
    encoding: Encoding,
    length: usize,
    mac: [u8; MAC_LEN],
    windows: [u64; STRIDE],
}

struct BuiltVersion {
    path: String,
    version: u64,
    length: usize,
    forms: Vec<BuiltForm>,
}

/// Writes a fingerprint file: add every secret version, then
/// [`write`](FingerprintBuilder::write). Values are hashed as they are added
/// and never kept.
pub struct FingerprintBuilder {
    tenant: String,
    key: Zeroizing<[u8; 32]>,
    keys: Keys,
    versions: Vec<BuiltVersion>,
}

impl std::fmt::Debug for FingerprintBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FingerprintBuilder")
            .field("tenant", &self.tenant)
            .field("versions", &self.versions.len())
            .finish_non_exhaustive()
    }
}

impl FingerprintBuilder {
    /// A builder for the secrets of `tenant`, with a fresh random key.
    pub fn new(tenant: impl Into<String>) -> FingerprintBuilder {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut key[..]);
        let keys = Keys::derive(&key);
        FingerprintBuilder {
            tenant: tenant.into(),
            key,
            keys,
            versions: Vec::new(),
        }
    }

    /// Adds version `version` of the secret at `path` holding `value`.
    pub fn add(&mut self, path: &str, version: u64, value: &[u8]) -> Added {
        if value.len() < MIN_FINGERPRINT_LEN {
            self.versions.push(BuiltVersion {
                path: path.to_string(),
                version,
                length: value.len(),
                forms: Vec::new(),
            });
            return Added::TooShort;
        }
        let mut seen: Vec<[u8; MAC_LEN]> = Vec::new();
        let mut forms = Vec::new();
        for encoding in Encoding::ALL {
            for form in encoded_forms(value, encoding) {
                let form = Zeroizing::new(form);
                if form.len() < GRAM + STRIDE - 1 {
                    continue;
                }
                let mac = self.keys.mac(&form);
                if seen.contains(&mac) {
                    continue;
                }
                seen.push(mac);
                let windows = std::array::from_fn(|j| self.keys.window(read_window(&form, j)));
                forms.push(BuiltForm {
                    encoding,
                    length: form.len(),
                    mac,
                    windows,
                });
            }
        }
        let n = forms.len();
        self.versions.push(BuiltVersion {
            path: path.to_string(),
            version,
            length: value.len(),
            forms,
        });
        Added::Fingerprinted { forms: n }
    }

    /// Writes the file: a JSON header line, then one JSON line per version
    /// added, in the order added.
    pub fn write(&self, out: &mut dyn Write, created_at: &str) -> io::Result<()> {
        let windows: usize = self.versions.iter().map(|v| v.forms.len() * STRIDE).sum();
        let tag_bits = tag_bits(windows);
        let skipped = self.versions.iter().filter(|v| v.forms.is_empty()).count();
        let header = Header {
            format: FINGERPRINT_FORMAT.into(),
            version: FINGERPRINT_FORMAT_VERSION,
            tenant: self.tenant.clone(),
            created_at: created_at.into(),
            key: hex::encode(&self.key[..]),
            gram: GRAM,
            stride: STRIDE,
            tag_bits,
            min_length: MIN_FINGERPRINT_LEN,
            versions: self.versions.len() - skipped,
            skipped,
        };
        serde_json::to_writer(&mut *out, &header)?;
        out.write_all(b"\n")?;
        for v in &self.versions {
            let line = Line {
                path: v.path.clone(),
                version: v.version,
                length: v.length,
                skipped: v
                    .forms
                    .is_empty()
                    .then(|| format!("shorter than {MIN_FINGERPRINT_LEN} bytes")),
                forms: v
                    .forms
                    .iter()
                    .map(|f| FormLine {
                        encoding: f.encoding.as_str().into(),
                        length: f.length,
                        mac: hex::encode(f.mac).into(),
                        tags: f
                            .windows
                            .iter()
                            .map(|&h| format!("{:x}", h >> (64 - tag_bits)).into())
                            .collect(),
                    })
                    .collect(),
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }
}

/// log2(n) rounded up (0 for 0 and 1).
fn log2_ceil(n: usize) -> u32 {
    usize::BITS - n.max(1).saturating_sub(1).leading_zeros()
}

/// The tag width for a file of `windows` windows: log2(windows) rounded up,
/// plus [`TAG_MARGIN_BITS`], between [`MIN_TAG_BITS`] and 64.
fn tag_bits(windows: usize) -> u32 {
    (log2_ceil(windows) + TAG_MARGIN_BITS).clamp(MIN_TAG_BITS, 64)
}

/// The in-memory prefilter: a blocked filter of 64-bit words. A window's
/// hash picks three bits (its top 18 bits) in a word (the next bits); a
/// window passes when all three are set. With one word per four windows
/// (16 bits per window, three of them set; 2 MiB for 960,000 windows),
/// about 17% of the bits are set and an unrelated window passes about once
/// in 200 times, in one memory access.
#[derive(Debug)]
struct Filter {
    words: Vec<u64>,
    word_bits: u32,
}

impl Filter {
    /// A filter for `windows` windows whose tags have `tag_bits` bits.
    fn new(windows: usize, tag_bits: u32) -> Filter {
        let word_bits = log2_ceil(windows)
            .saturating_sub(2)
            .clamp(FILTER_WORD_BITS.0, FILTER_WORD_BITS.1)
            .min(tag_bits - FILTER_BIT_BITS);
        Filter {
            words: vec![0; 1 << word_bits],
            word_bits,
        }
    }

    /// Word index and mask of the hash `h`: its top 18 bits choose three
    /// bits of a word, the next `word_bits` bits the word (so the top
    /// `word_bits + 18` bits are used, and the tag suffices). The bit
    /// positions come from fixed shifts, which keeps the scan loop short.
    #[inline(always)]
    fn locate(&self, h: u64) -> (usize, u64) {
        let word = ((h << FILTER_BIT_BITS) >> (64 - self.word_bits)) as usize;
        let mask = (1u64 << (h >> 58)) | (1u64 << ((h >> 52) & 63)) | (1u64 << ((h >> 46) & 63));
        (word, mask)
    }

    fn insert(&mut self, h: u64) {
        let (word, mask) = self.locate(h);
        self.words[word] |= mask;
    }

    #[inline(always)]
    fn may_contain(&self, h: u64) -> bool {
        let (word, mask) = self.locate(h);
        self.words[word] & mask == mask
    }
}

/// A secret version a fingerprint file describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintedVersion {
    /// The secret's path (`tenant/acme/db-password`).
    pub path: String,
    /// Its version.
    pub version: u64,
    /// The value's length in bytes.
    pub length: usize,
}

struct Form {
    version: u32,
    encoding: Encoding,
}

/// A window of a form: (tag, offset of the window in the form, form length).
/// Many values share their first bytes (`sk_live_`, `ghp_`): windows are
/// kept once per distinct (tag, offset, length), so one MAC per candidate
/// span, not per form, is computed.
type Window = (u64, u8, u32);

/// A loaded fingerprint file, ready to search content with.
pub struct FingerprintSet {
    origin: String,
    tenant: String,
    keys: Keys,
    tag_bits: u32,
    filter: Filter,
    /// Windows sorted by tag; the windows whose tags start with the bits
    /// `b` are `windows[buckets[b]..buckets[b + 1]]`.
    windows: Vec<Window>,
    buckets: Vec<u32>,
    bucket_bits: u32,
    /// MAC → the forms with that MAC (several when versions share a value).
    /// (MAC, form), sorted: several forms share a MAC when versions share a
    /// value.
    macs: Vec<([u8; MAC_LEN], u32)>,
    forms: Vec<Form>,
    versions: Vec<FingerprintedVersion>,
    skipped: Vec<FingerprintedVersion>,
    max_form_len: usize,
}

impl std::fmt::Debug for FingerprintSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FingerprintSet")
            .field("origin", &self.origin)
            .field("tenant", &self.tenant)
            .field("versions", &self.versions.len())
            .field("forms", &self.forms.len())
            .field("skipped", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

/// A fingerprinted value found in content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FingerprintHit {
    /// Byte offset of the match in the searched bytes.
    pub start: usize,
    /// Length of the match.
    pub len: usize,
    /// Index of the version in [`FingerprintSet::versions`].
    pub version: usize,
    /// The form it was found in.
    pub encoding: Encoding,
}

fn parse_error(origin: &str, problem: impl Into<String>) -> crate::Error {
    crate::Error::Fingerprints {
        origin: origin.to_string(),
        problem: problem.into(),
    }
}

impl FingerprintSet {
    /// Reads a fingerprint file.
    pub fn load(path: &std::path::Path) -> Result<FingerprintSet, crate::Error> {
        let file = std::fs::File::open(path).map_err(|e| crate::Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        FingerprintSet::read(&path.display().to_string(), &mut io::BufReader::new(file))
    }

    /// Reads a fingerprint file from `reader`; `origin` names it in errors.
    pub fn read(origin: &str, reader: &mut dyn BufRead) -> Result<FingerprintSet, crate::Error> {
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .map_err(|e| parse_error(origin, e.to_string()))?;
        let mut lines = text.lines();
        let first = lines
            .next()
            .ok_or_else(|| parse_error(origin, "empty file"))?;
        let header: Header = serde_json::from_str(first).map_err(|e| {
            parse_error(
                origin,
                format!("line 1: not a fingerprint file header: {e}"),
            )
        })?;
        if header.format != FINGERPRINT_FORMAT {
            return Err(parse_error(
                origin,
                format!(
                    "line 1: format `{}`, expected `{FINGERPRINT_FORMAT}`",
                    header.format
                ),
            ));
        }
        if header.version != FINGERPRINT_FORMAT_VERSION {
            return Err(parse_error(
                origin,
                format!(
                    "line 1: format version {} (this tenant-guard reads version {FINGERPRINT_FORMAT_VERSION})",
                    header.version
                ),
            ));
        }
        if header.gram != GRAM
            || header.stride != STRIDE
            || !(MIN_TAG_BITS..=64).contains(&header.tag_bits)
        {
            return Err(parse_error(
                origin,
                format!(
                    "line 1: unsupported parameters gram {} stride {} tag_bits {}",
                    header.gram, header.stride, header.tag_bits
                ),
            ));
        }
        let key: [u8; 32] = hex::decode(&header.key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| parse_error(origin, "line 1: key is not 64 hex digits"))?;
        let key = Zeroizing::new(key);
        let mut forms = Vec::new();
        let mut versions = Vec::new();
        let mut skipped = Vec::new();
        let mut max_form_len = 0;
        let mut windows: Vec<Window> = Vec::new();
        let mut macs: Vec<([u8; MAC_LEN], u32)> = Vec::new();
        for (i, line) in lines.enumerate() {
            let n = i + 2;
            if line.trim().is_empty() {
                continue;
            }
            let entry: Line<'_> = serde_json::from_str(line)
                .map_err(|e| parse_error(origin, format!("line {n}: {e}")))?;
            let described = FingerprintedVersion {
                path: entry.path,
                version: entry.version,
                length: entry.length,
            };
            if entry.skipped.is_some() {
                skipped.push(described);
                continue;
            }
            let index = u32::try_from(versions.len())
                .map_err(|_| parse_error(origin, "too many versions"))?;
            versions.push(described);
            for form in entry.forms {
                let encoding = Encoding::ALL
                    .into_iter()
                    .find(|e| e.as_str() == form.encoding)
                    .ok_or_else(|| {
                        parse_error(
                            origin,
                            format!("line {n}: unknown encoding `{}`", form.encoding),
                        )
                    })?;
                let mac: [u8; MAC_LEN] = hex::decode(form.mac.as_bytes())
                    .ok()
                    .and_then(|m| m.try_into().ok())
                    .ok_or_else(|| parse_error(origin, format!("line {n}: bad mac")))?;
                if form.tags.len() != STRIDE || form.length < GRAM + STRIDE - 1 {
                    return Err(parse_error(
                        origin,
                        format!(
                            "line {n}: a form needs {STRIDE} tags and {} bytes",
                            GRAM + STRIDE - 1
                        ),
                    ));
                }
                let form_index = u32::try_from(forms.len())
                    .map_err(|_| parse_error(origin, "too many forms"))?;
                let length = u32::try_from(form.length)
                    .map_err(|_| parse_error(origin, format!("line {n}: form too long")))?;
                for (j, tag) in form.tags.iter().enumerate() {
                    let tag = u64::from_str_radix(tag, 16)
                        .ok()
                        .filter(|&t| header.tag_bits == 64 || t >> header.tag_bits == 0)
                        .ok_or_else(|| parse_error(origin, format!("line {n}: bad tag `{tag}`")))?;
                    windows.push((tag, j as u8, length));
                }
                macs.push((mac, form_index));
                forms.push(Form {
                    version: index,
                    encoding,
                });
                max_form_len = max_form_len.max(form.length);
            }
        }
        macs.sort_unstable();
        windows.sort_unstable();
        windows.dedup();
        let mut filter = Filter::new(windows.len(), header.tag_bits);
        let bucket_bits = log2_ceil(windows.len()).clamp(1, 24).min(header.tag_bits);
        let mut buckets = vec![0u32; (1 << bucket_bits) + 1];
        for &(tag, _, _) in &windows {
            let h = tag << (64 - header.tag_bits);
            filter.insert(h);
            buckets[(h >> (64 - bucket_bits)) as usize + 1] += 1;
        }
        for b in 1..buckets.len() {
            buckets[b] += buckets[b - 1];
        }
        Ok(FingerprintSet {
            origin: origin.to_string(),
            tenant: header.tenant,
            keys: Keys::derive(&key),
            tag_bits: header.tag_bits,
            filter,
            windows,
            buckets,
            bucket_bits,
            macs,
            forms,
            versions,
            skipped,
            max_form_len,
        })
    }

    /// Where the set was read from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The tenant the file was exported for.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The fingerprinted versions.
    pub fn versions(&self) -> &[FingerprintedVersion] {
        &self.versions
    }

    /// The versions the export skipped (too short to fingerprint safely).
    pub fn skipped(&self) -> &[FingerprintedVersion] {
        &self.skipped
    }

    /// The longest form: content must be searched with at least this much
    /// overlap between pieces.
    pub fn max_form_len(&self) -> usize {
        self.max_form_len
    }

    /// Appends to `out` every fingerprinted form in `hay` that starts before
    /// `own_end` and ends inside `hay`, in no particular order.
    pub fn find(&self, hay: &[u8], own_end: usize, out: &mut Vec<FingerprintHit>) {
        if hay.len() < GRAM || self.forms.is_empty() {
            return;
        }
        let tag_shift = 64 - self.tag_bits;
        // A form starting at `q < own_end` has one window at an offset below
        // STRIDE on the grid of multiples of STRIDE.
        let last = (hay.len() - GRAM).min(own_end + STRIDE - 1);
        // The windows on the grid are the content's 8-byte words: one load
        // per window. Windows passing the filter are confirmed after the
        // loop, which keeps the loop free of calls.
        let (xor, mul) = (self.keys.xor, self.keys.mul);
        let mut passed = Vec::new();
        for (i, w) in hay[..last + GRAM].chunks_exact(STRIDE).enumerate() {
            let window = u64::from_le_bytes(w.try_into().expect("STRIDE == GRAM bytes"));
            let h = (window ^ xor).wrapping_mul(mul);
            if self.filter.may_contain(h) {
                passed.push((i * STRIDE, h));
            }
        }
        for &(p, h) in &passed {
            self.confirm(hay, own_end, p, h, h >> tag_shift, out);
        }
    }

    #[cold]
    fn confirm(
        &self,
        hay: &[u8],
        own_end: usize,
        p: usize,
        h: u64,
        tag: u64,
        out: &mut Vec<FingerprintHit>,
    ) {
        let bucket = (h >> (64 - self.bucket_bits)) as usize;
        let candidates =
            &self.windows[self.buckets[bucket] as usize..self.buckets[bucket + 1] as usize];
        for &(_, j, length) in candidates.iter().filter(|w| w.0 == tag) {
            let length = length as usize;
            let Some(start) = p.checked_sub(usize::from(j)) else {
                continue;
            };
            if start >= own_end || start + length > hay.len() {
                continue;
            }
            // A map lookup, not a constant-time comparison: the MACs are in
            // the file, so the time taken can reveal nothing they do not.
            let mac = self.keys.mac(&hay[start..start + length]);
            let from = self.macs.partition_point(|(m, _)| *m < mac);
            for &(_, f) in self.macs[from..].iter().take_while(|(m, _)| *m == mac) {
                let form = &self.forms[f as usize];
                out.push(FingerprintHit {
                    start,
                    len: length,
                    version: form.version as usize,
                    encoding: form.encoding,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn export(values: &[(&str, &[u8])]) -> (Vec<u8>, FingerprintSet) {
        let mut b = FingerprintBuilder::new("acme");
        for (i, (path, value)) in values.iter().enumerate() {
            b.add(path, i as u64 + 1, value);
        }
        let mut file = Vec::new();
        b.write(&mut file, "2026-11-23T00:00:00Z").unwrap();
        let set = FingerprintSet::read("test", &mut &file[..]).unwrap();
        (file, set)
    }

    fn find_all(set: &FingerprintSet, hay: &[u8]) -> Vec<FingerprintHit> {
        let mut out = Vec::new();
        set.find(hay, hay.len(), &mut out);
        out
    }

    const VALUE: &[u8] = b"sk_live_4eC39HqLyjWDarjtT1zdp7dc/+x=y\"z'"; // tenant-guard:allow ADR-001

    #[test]
    fn every_encoding_at_every_offset_is_found() {
        let (_, set) = export(&[("tenant/acme/stripe", VALUE)]);
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for encoding in Encoding::ALL {
            cases.extend(encoded_forms(VALUE, encoding));
        }
        for prefix in 0..5 {
            let mut input = vec![b'#'; prefix];
            input.extend_from_slice(VALUE);
            input.push(b'!');
            for e in [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ] {
                cases.push(e.encode(&input).into_bytes());
            }
        }
        for case in cases {
            for offset in 0..STRIDE + 3 {
                let mut hay = vec![b'.'; offset];
                hay.extend_from_slice(&case);
                hay.extend_from_slice(b" trailing text");
                let hits = find_all(&set, &hay);
                assert!(
                    !hits.is_empty(),
                    "{} at {offset}",
                    String::from_utf8_lossy(&case)
                );
                assert_eq!(set.versions()[hits[0].version].path, "tenant/acme/stripe");
            }
        }
    }

    #[test]
    fn the_file_holds_no_secret_bytes() {
        let (file, _) = export(&[("tenant/acme/stripe", VALUE)]);
        for encoding in Encoding::ALL {
            for form in encoded_forms(VALUE, encoding) {
                // Any 12 consecutive bytes of any form.
                for w in form.windows(12) {
                    assert!(
                        !file.windows(12).any(|f| f == w),
                        "{encoding} window in the file"
                    );
                }
            }
        }
    }

    #[test]
    fn short_values_are_skipped_and_listed() {
        let (_, set) = export(&[("tenant/acme/pin", b"123456"), ("tenant/acme/long", VALUE)]);
        assert_eq!(set.skipped().len(), 1);
        assert_eq!(set.skipped()[0].path, "tenant/acme/pin");
        assert_eq!(set.versions().len(), 1);
        assert!(find_all(&set, b"xx 123456 xx").is_empty());
    }

    #[test]
    fn unrelated_content_and_near_misses_are_not_found() {
        let (_, set) = export(&[("tenant/acme/stripe", VALUE)]);
        let mut near = VALUE.to_vec();
        *near.last_mut().unwrap() ^= 1;
        assert!(find_all(&set, &near).is_empty());
        let noise: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert!(find_all(&set, &noise).is_empty());
    }

    #[test]
    fn ownership_limits_where_matches_start() {
        let (_, set) = export(&[("tenant/acme/stripe", VALUE)]);
        let mut hay = vec![b' '; 10];
        hay.extend_from_slice(VALUE);
        let mut out = Vec::new();
        set.find(&hay, 10, &mut out);
        assert!(out.is_empty(), "starts at the owned end");
        set.find(&hay, 11, &mut out);
        assert_eq!(out.len(), 1);
        // A match running past the end of the bytes is not reported.
        out.clear();
        set.find(&hay[..hay.len() - 1], hay.len(), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn bad_files_are_refused_with_their_line() {
        let (file, _) = export(&[("tenant/acme/stripe", VALUE)]);
        let text = String::from_utf8(file).unwrap();
        let err = |t: &str| {
            FingerprintSet::read("f", &mut t.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(err("").contains("empty"));
        assert!(err("{}").contains("line 1"));
        let wrong_version = text.replacen("\"version\":1", "\"version\":9", 1);
        assert!(err(&wrong_version).contains("format version 9"));
        let broken = format!("{}\n{{\"path\":1}}\n", text.lines().next().unwrap());
        assert!(err(&broken).contains("line 2"));
    }

    #[test]
    fn tag_width_grows_with_the_number_of_windows() {
        assert_eq!(tag_bits(1), 24);
        assert_eq!(tag_bits(1 << 10), 26);
        assert_eq!(tag_bits(480_000), 35);
        // The filter never needs more bits than a tag has.
        for (windows, tag_bits) in [(1, 24), (1 << 20, 24), (1 << 30, 64)] {
            let f = Filter::new(windows, tag_bits);
            assert!(f.word_bits + FILTER_BIT_BITS <= tag_bits);
        }
    }
}
