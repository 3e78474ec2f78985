//! Property tests of the encoded-value matchers, the canary matcher and the
//! vault-secret fingerprints: random values in random encodings at random
//! offsets of random data, sometimes inside a gzip stream or a tar archive,
//! are found; random data without one gives nothing.

use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use std::io::Read;
use std::sync::Arc;

use tenant_guard_scan::{
    ArchiveLimits, Canary, CanarySet, Finding, FindingKind, FingerprintBuilder, FingerprintSet,
    RuleSet, ScanOptions, Scanner, Visitor, find_canaries, visit_bytes,
};

/// How a canary is written into the file, encoded independently of the
/// matcher's own code.
#[derive(Debug, Clone, Copy)]
enum Enc {
    Raw,
    /// Base64 of `prefix` random bytes + the value + `suffix` random bytes.
    B64 {
        url: bool,
        pad: bool,
        prefix: usize,
        suffix: usize,
    },
    HexLower,
    HexUpper,
    UrlReserved,
    UrlAll,
    Json,
    ShellSingle,
    ShellDouble,
}

fn enc_strategy() -> impl Strategy<Value = Enc> {
    prop_oneof![
        Just(Enc::Raw),
        (any::<bool>(), any::<bool>(), 0usize..7, 0usize..7).prop_map(
            |(url, pad, prefix, suffix)| Enc::B64 {
                url,
                pad,
                prefix,
                suffix
            }
        ),
        Just(Enc::HexLower),
        Just(Enc::HexUpper),
        Just(Enc::UrlReserved),
        Just(Enc::UrlAll),
        Just(Enc::Json),
        Just(Enc::ShellSingle),
        Just(Enc::ShellDouble),
    ]
}

fn encode(value: &[u8], enc: Enc, noise: &[u8]) -> Vec<u8> {
    match enc {
        Enc::Raw => value.to_vec(),
        Enc::B64 {
            url,
            pad,
            prefix,
            suffix,
        } => {
            let mut input = noise[..prefix].to_vec();
            input.extend_from_slice(value);
            input.extend_from_slice(&noise[prefix..prefix + suffix]);
            let e = match (url, pad) {
                (false, true) => STANDARD.encode(&input),
                (false, false) => STANDARD_NO_PAD.encode(&input),
                (true, true) => URL_SAFE.encode(&input),
                (true, false) => URL_SAFE_NO_PAD.encode(&input),
            };
            e.into_bytes()
        }
        Enc::HexLower => hex::encode(value).into_bytes(),
        Enc::HexUpper => hex::encode_upper(value).into_bytes(),
        Enc::UrlReserved | Enc::UrlAll => {
            let mut out = String::new();
            for &b in value {
                if matches!(enc, Enc::UrlReserved)
                    && (b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out.into_bytes()
        }
        Enc::Json => serde_json::to_string(std::str::from_utf8(value).unwrap())
            .unwrap()
            .into_bytes(),
        Enc::ShellSingle => {
            let mut out = b"'".to_vec();
            for &b in value {
                if b == b'\'' {
                    out.extend_from_slice(b"'\\''");
                } else {
                    out.push(b);
                }
            }
            out.push(b'\'');
            out
        }
        Enc::ShellDouble => {
            let mut out = b"\"".to_vec();
            for &b in value {
                if b"\"\\$`".contains(&b) {
                    out.push(b'\\');
                }
                out.push(b);
            }
            out.push(b'"');
            out
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Wrap {
    Plain,
    Gzip,
    Tar,
    TarGz,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn tar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}

fn wrap(data: Vec<u8>, w: Wrap) -> (Vec<u8>, &'static str) {
    match w {
        Wrap::Plain => (data, "out/file.bin"),
        Wrap::Gzip => (gzip(&data), "out/file.bin.gz"),
        Wrap::Tar => (tar("dir/file.bin", &data), "out/a.tar!/dir/file.bin"),
        Wrap::TarGz => (gzip(&tar("dir/file.bin", &data)), "out/a.tar!/dir/file.bin"),
    }
}

fn wrap_strategy() -> impl Strategy<Value = Wrap> {
    prop_oneof![
        4 => Just(Wrap::Plain),
        1 => Just(Wrap::Gzip),
        1 => Just(Wrap::Tar),
        1 => Just(Wrap::TarGz),
    ]
}

/// Printable ASCII canaries, 16 to 48 bytes.
fn canary_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0x21u8..0x7f, 16..48)
}

/// Random bytes that do not start like a gzip stream or a zip archive (the
/// walk would then read them as one).
fn data_strategy(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(|mut d| {
        if matches!(d.first(), Some(0x1f | b'P')) {
            d[0] = b'.';
        }
        d
    })
}

fn set_of(values: &[Vec<u8>]) -> CanarySet {
    CanarySet::new(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Canary::new(format!("t{i}"), "c", v.clone()))
            .collect(),
    )
    .unwrap()
}

/// `data` with `form` inserted at a random offset, wrapped: (bytes, the name
/// to walk them as, the path a match must be reported at, the offset).
fn plant(
    form: &[u8],
    data: &[u8],
    at: prop::sample::Index,
    w: Wrap,
) -> (Vec<u8>, &'static str, &'static str, usize) {
    let offset = if data.is_empty() {
        0
    } else {
        at.index(data.len() + 1)
    };
    let mut file = data[..offset].to_vec();
    file.extend_from_slice(form);
    file.extend_from_slice(&data[offset..]);
    let (bytes, expected_path) = wrap(file, w);
    let display = if matches!(w, Wrap::Tar | Wrap::TarGz) {
        "out/a.tar"
    } else {
        expected_path
    };
    (bytes, display, expected_path, offset)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_encoded_canary_is_found(
        values in prop::collection::vec(canary_strategy(), 1..4),
        pick in any::<prop::sample::Index>(),
        enc in enc_strategy(),
        data in data_strategy(4096),
        at in any::<prop::sample::Index>(),
        noise in prop::collection::vec(any::<u8>(), 12),
        w in wrap_strategy(),
    ) {
        let set = set_of(&values);
        let which = pick.index(values.len());
        let form = encode(&values[which], enc, &noise);
        let (bytes, display, expected_path, offset) = plant(&form, &data, at, w);
        let found = find_canaries(&set, display, &bytes, ArchiveLimits::default());
        prop_assert!(
            found.iter().any(|(p, m)| m.canary == which && p == expected_path),
            "canary {which} in {enc:?} at {offset} ({w:?}) not found: {found:?}"
        );
        // Nothing but the planted canary is reported.
        prop_assert!(found.iter().all(|(_, m)| m.canary == which), "{found:?}");
    }

    #[test]
    fn random_data_without_a_canary_gives_nothing(
        values in prop::collection::vec(canary_strategy(), 1..4),
        data in data_strategy(8192),
        w in wrap_strategy(),
    ) {
        let set = set_of(&values);
        let (bytes, display) = wrap(data, w);
        let found = find_canaries(&set, display, &bytes, ArchiveLimits::default());
        prop_assert!(found.is_empty(), "{found:?}");
    }
}

fn fingerprints_of(values: &[Vec<u8>]) -> Arc<FingerprintSet> {
    let mut b = FingerprintBuilder::new("acme");
    for (i, v) in values.iter().enumerate() {
        b.add(&format!("tenant/acme/s{i}"), 1, v);
    }
    let mut file = Vec::new();
    b.write(&mut file, "2026-11-23T00:00:00Z").unwrap();
    Arc::new(FingerprintSet::read("prop", &mut &file[..]).unwrap())
}

/// Scans with no rules but the fingerprints, through archives.
struct ScanVisitor {
    scanner: Scanner,
    found: Vec<Finding>,
}

impl Visitor for ScanVisitor {
    fn content(&mut self, path: &str, content: &mut dyn Read) -> std::io::Result<()> {
        self.scanner.scan_reader(path, content, &mut self.found)
    }

    fn notice(&mut self, _finding: Finding) {}
}

fn scan_with_fingerprints(set: Arc<FingerprintSet>, display: &str, bytes: &[u8]) -> Vec<Finding> {
    let rules = Arc::new(RuleSet::new(Vec::new()).unwrap());
    let mut v = ScanVisitor {
        scanner: Scanner::new(rules, ScanOptions::default().fingerprints(set)),
        found: Vec::new(),
    };
    visit_bytes(display, bytes, ArchiveLimits::default(), &mut v);
    v.found
}

/// Printable ASCII values long enough to be fingerprinted.
fn secret_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0x21u8..0x7f, 28..64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_encoded_fingerprinted_secret_is_found(
        values in prop::collection::vec(secret_strategy(), 1..4),
        pick in any::<prop::sample::Index>(),
        enc in enc_strategy(),
        data in data_strategy(4096),
        at in any::<prop::sample::Index>(),
        noise in prop::collection::vec(any::<u8>(), 12),
        w in wrap_strategy(),
    ) {
        let set = fingerprints_of(&values);
        let which = pick.index(values.len());
        let form = encode(&values[which], enc, &noise);
        let (bytes, display, expected_path, offset) = plant(&form, &data, at, w);
        let found = scan_with_fingerprints(set, display, &bytes);
        let want = format!("tenant/acme/s{which} (version 1");
        prop_assert!(
            found.iter().any(|f| f.kind == FindingKind::VaultSecret
                && f.path == expected_path
                && f.message.contains(&want)),
            "secret {which} in {enc:?} at {offset} ({w:?}) not found: {found:?}"
        );
        for f in &found {
            prop_assert!(f.message.contains(&want), "{f:?}");
            // Nothing of the value is reported.
            let text = format!("{f:?}");
            prop_assert!(!text.as_bytes().windows(12).any(|w| values[which].windows(12).any(|v| v == w)));
        }
    }

    #[test]
    fn random_data_without_a_fingerprinted_secret_gives_nothing(
        values in prop::collection::vec(secret_strategy(), 1..4),
        data in data_strategy(8192),
        w in wrap_strategy(),
    ) {
        let set = fingerprints_of(&values);
        let (bytes, display) = wrap(data, w);
        let found = scan_with_fingerprints(set, display, &bytes);
        prop_assert!(found.is_empty(), "{found:?}");
    }
}
