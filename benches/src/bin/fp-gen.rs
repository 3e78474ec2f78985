//! Writes a vault fingerprint file of N random credential-shaped values, for
//! the `tenant-guard scan --fingerprints` benchmark
//! (`cli/tenant-guard/bench/run_fingerprint_bench.sh`), and a file that
//! plants some of those values, encoded, so that the benchmark checks that
//! matches are found at that scale.
//!
//! usage: fp-gen COUNT FINGERPRINT_FILE PLANT_FILE

use std::io::Write;

use base64::Engine as _;
use rand::Rng;
use tenant_guard_scan::FingerprintBuilder;

const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PUNCT: &[u8] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#%&()*+,-./:;<=>?@[]^_{|}~";

fn random(rng: &mut impl Rng, alphabet: &[u8], n: usize) -> String {
    (0..n)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// A value shaped like what tenants store: API keys with their providers'
/// prefixes, bare random tokens and generated passwords.
fn value(rng: &mut impl Rng, i: usize) -> String {
    match i % 5 {
        0 => format!("sk_live_{}", random(rng, B62, 24 + i % 16)),
        1 => format!("ghp_{}", random(rng, B62, 36)),
        2 => format!(
            "xoxb-{}-{}",
            random(rng, b"0123456789", 12),
            random(rng, B62, 24)
        ),
        3 => random(rng, B62, 32 + i % 32),
        _ => random(rng, PUNCT, 28 + i % 17),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: fp-gen COUNT FINGERPRINT_FILE PLANT_FILE");
        std::process::exit(2);
    }
    let count: usize = args[1].parse().expect("COUNT is a number");
    let mut rng = rand::thread_rng();
    let mut builder = FingerprintBuilder::new("bench");
    let mut plant = std::io::BufWriter::new(std::fs::File::create(&args[3]).unwrap());
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut planted = 0;
    for i in 0..count {
        let v = value(&mut rng, i);
        builder.add(&format!("tenant/bench/secret-{i:05}"), 1, v.as_bytes());
        // Every 500th value is planted, in turn raw, base64, hex and in JSON.
        if i % 500 == 0 {
            let line = match (i / 500) % 4 {
                0 => format!("token = {v}"),
                1 => format!("blob: {}", b64.encode(format!("cache:{v}"))),
                2 => format!("hex {}", hex::encode(&v)),
                _ => format!("{{\"secret\": {}}}", serde_json::to_string(&v).unwrap()),
            };
            writeln!(plant, "{line}").unwrap();
            planted += 1;
        }
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args[2]).unwrap());
    builder.write(&mut out, "2026-11-23T00:00:00Z").unwrap();
    out.flush().unwrap();
    plant.flush().unwrap();
    eprintln!("fp-gen: {count} values fingerprinted, {planted} planted");
}
