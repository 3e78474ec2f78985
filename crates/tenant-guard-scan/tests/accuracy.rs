//! Accuracy of the built-in rules (policies/rules) on a generated, labelled
//! corpus: secrets made from each rule's own examples with the secret part
//! randomized, planted in source, config, logs, `.env` files and archives,
//! among look-alike decoys. Requires recall ≥ 98% and precision ≥ 95%.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tenant_guard_scan::{
    Checksum, FindingKind, Rule, RuleSet, ScanOptions, WalkOptions, builtin_rules, scan_paths,
};

const MIN_PLANTED: usize = 2000;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A rule's regex (text form) and where its secret is.
struct Matcher {
    regex: regex::Regex,
    group: usize,
}

impl Matcher {
    fn new(rule: &Rule) -> Matcher {
        let regex = regex::Regex::new(&rule.regex).unwrap();
        let names: Vec<Option<&str>> = regex.capture_names().collect();
        let group = names
            .iter()
            .position(|n| *n == Some("secret"))
            .unwrap_or(if regex.captures_len() > 1 { 1 } else { 0 });
        Matcher { regex, group }
    }

    /// Byte spans of every secret the regex reports in `text`.
    fn secrets(&self, text: &str) -> Vec<(usize, usize)> {
        self.regex
            .captures_iter(text)
            .filter_map(|c| c.get(self.group).map(|m| (m.start(), m.end())))
            .collect()
    }
}

fn entropy(s: &[u8]) -> f64 {
    let mut counts = HashMap::new();
    for b in s {
        *counts.entry(b).or_insert(0u32) += 1;
    }
    let n = s.len() as f64;
    counts
        .values()
        .map(|&c| -(f64::from(c) / n) * (f64::from(c) / n).log2())
        .sum()
}

fn crc_suffix(body: &[u8]) -> String {
    let mut n = crc32fast::hash(body);
    let mut out = vec![b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap()
}

/// Positions of `secret` that may change: alphanumerics in runs of ≥ 10
/// (so words like PRIVATE or BEGIN stay), outside keyword occurrences.
fn mutable_positions(secret: &str, keywords: &[String]) -> Vec<usize> {
    let bytes = secret.as_bytes();
    let lower = secret.to_ascii_lowercase();
    let mut frozen = vec![false; bytes.len()];
    for k in keywords {
        let k = k.to_ascii_lowercase();
        let mut from = 0;
        while let Some(p) = lower[from..].find(&k) {
            frozen[from + p..from + p + k.len()]
                .iter_mut()
                .for_each(|f| *f = true);
            from += p + 1;
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        if i - start >= 10 {
            out.extend((start..i).filter(|&p| !frozen[p]));
        }
    }
    out
}

/// Makes a fresh secret of the rule's shape from one of its examples.
struct Generator {
    rule: Rule,
    matcher: Matcher,
    /// Characters seen in the rule's example secrets, by class.
    digits: Vec<u8>,
    lower: Vec<u8>,
    upper: Vec<u8>,
}

impl Generator {
    fn new(rule: &Rule) -> Generator {
        let matcher = Matcher::new(rule);
        let mut seen = HashSet::new();
        for e in &rule.examples {
            for (s, t) in matcher.secrets(e) {
                let secret = &e[s..t];
                let bytes = secret.as_bytes();
                seen.extend(
                    mutable_positions(secret, &rule.keywords)
                        .into_iter()
                        .map(|p| bytes[p]),
                );
            }
        }
        let class = |f: fn(&u8) -> bool| {
            let mut v: Vec<u8> = seen.iter().copied().filter(f).collect();
            v.sort_unstable();
            v
        };
        Generator {
            rule: rule.clone(),
            digits: class(u8::is_ascii_digit),
            lower: class(u8::is_ascii_lowercase),
            upper: class(u8::is_ascii_uppercase),
            matcher,
        }
    }

    /// Returns (example text with a new secret, the new secret).
    fn generate(&self, rng: &mut StdRng, n: usize) -> Option<(String, String)> {
        let examples = &self.rule.examples;
        for attempt in 0..60 {
            let example = &examples[(n + attempt) % examples.len()];
            let spans = self.matcher.secrets(example);
            let &(s, e) = spans.first()?;
            let old = &example[s..e];
            let mut new = old.as_bytes().to_vec();
            let mut positions = mutable_positions(old, &self.rule.keywords);
            if attempt >= 30 {
                // Structured values (base64 of JSON...): change only the tail.
                positions.drain(..positions.len().saturating_sub(8));
            }
            for p in positions {
                let pool = match new[p] {
                    b'0'..=b'9' => &self.digits,
                    b'a'..=b'z' => &self.lower,
                    _ => &self.upper,
                };
                if !pool.is_empty() {
                    new[p] = pool[rng.gen_range(0..pool.len())];
                }
            }
            let mut new = String::from_utf8(new).unwrap();
            match self.rule.checksum {
                Some(Checksum::SecretMcp) => {
                    let kind = if old.starts_with("smcpo_") {
                        smcp_token::TokenKind::Operator
                    } else {
                        smcp_token::TokenKind::Tenant
                    };
                    new = smcp_token::generate(kind).to_string();
                }
                Some(Checksum::Github | Checksum::Npm) if new.len() == 40 => {
                    let sum = crc_suffix(&new.as_bytes()[4..34]);
                    new.replace_range(34..40, &sum);
                }
                _ => {}
            }
            if new == old {
                continue;
            }
            if self
                .rule
                .entropy
                .is_some_and(|min| entropy(new.as_bytes()) < min)
            {
                continue;
            }
            let text = format!("{}{}{}", &example[..s], new, &example[e..]);
            if self
                .matcher
                .secrets(&text)
                .iter()
                .any(|&(a, b)| text[a..b] == new)
            {
                return Some((text, new));
            }
        }
        None
    }
}

const FILLER: &[&str] = &[
    "import os",
    "import json",
    "def handler(event, context):",
    "    return {\"status\": 200, \"body\": json.dumps(event)}",
    "const express = require('express');",
    "app.listen(process.env.PORT || 3000);",
    "func main() { fmt.Println(\"hello\") }",
    "server:",
    "  port: 8080",
    "logging.level.root=INFO",
    "spring.datasource.url=jdbc:postgresql://db:5432/app",
    "FROM debian:bookworm-slim",
    "RUN apt-get update && apt-get install -y ca-certificates",
    "2024-05-01T12:00:00Z INFO request served in 12ms path=/healthz",
    "  \"name\": \"tenant-service\",",
    "  \"version\": \"1.4.2\",",
    "# Configuration for the staging environment",
    "timeout_seconds = 30",
    "retries: 3",
    "user_name = \"deploy\"",
];

fn hex(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect()
}

fn uuid(rng: &mut StdRng) -> String {
    let h = hex(rng, 32);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn decoy(rng: &mut StdRng, negatives: &[String]) -> String {
    match rng.gen_range(0..12) {
        0 => format!("commit {}", hex(rng, 40)),
        1 => format!("checksum = \"sha256:{}\"", hex(rng, 64)),
        2 => format!("request_id: {}", uuid(rng)),
        3 => "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE".into(),
        4 => "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        5 => format!(
            "data: {}",
            b64(b"The quick brown fox jumps over the lazy dog, again and again.")
        ),
        6 => "API_KEY=your_api_key_here".into(),
        7 => "password: ${DB_PASSWORD}".into(),
        8 => "token = \"<insert-token>\"".into(),
        9 => format!("\"integrity\": \"sha512-{}\"", b64(hex(rng, 48).as_bytes())),
        10 => "SECRET_KEY=changeme".into(),
        _ => negatives[rng.gen_range(0..negatives.len())].clone(),
    }
}

/// One planted secret.
struct Planted {
    path: String,
    rule: String,
    sha: String,
    /// First and last line of the planted text.
    lines: (u64, u64),
}

fn sha(s: &str) -> String {
    hex_encode(&Sha256::digest(s.as_bytes()))
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const KINDS: &[(&str, &str)] = &[
    ("py", "# "),
    ("js", "// "),
    ("go", "// "),
    ("yaml", "# "),
    ("json", ""),
    ("properties", "# "),
    ("env", ""),
    ("Dockerfile", "# "),
    ("log", "2024-05-01T12:00:01Z DEBUG loaded "),
];

fn file_name(kind: &str, i: usize) -> String {
    match kind {
        "env" => format!("svc{i}/.env.production"),
        "Dockerfile" => format!("svc{i}/Dockerfile"),
        k => format!("svc{i}/src/file{i}.{k}"),
    }
}

#[test]
fn recall_and_precision_on_a_planted_corpus() {
    let rules = builtin_rules().expect("policies/rules parses");
    assert!(!rules.is_empty(), "policies/rules holds no rules");
    let seed: u64 = std::env::var("ACCURACY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261123);
    let mut rng = StdRng::seed_from_u64(seed);
    let per_rule = MIN_PLANTED.div_ceil(rules.len()) + 1;
    let generators: Vec<Generator> = rules.iter().map(Generator::new).collect();
    let negatives: Vec<String> = rules
        .iter()
        .flat_map(|r| r.negative_examples.iter().cloned())
        .collect();

    // Planted lines: (rule, text, secret), shuffled across files.
    let mut lines: Vec<(usize, String, String)> = Vec::new();
    let mut ungeneratable = Vec::new();
    for (ri, g) in generators.iter().enumerate() {
        let mut made = 0;
        for n in 0..per_rule * 3 {
            if made == per_rule {
                break;
            }
            if let Some((text, secret)) = g.generate(&mut rng, n) {
                lines.push((ri, text, secret));
                made += 1;
            }
        }
        if made < per_rule {
            ungeneratable.push(format!("{} ({made}/{per_rule})", g.rule.id));
        }
    }
    // Top up from the rules that do generate until the corpus is big enough.
    let mut n = per_rule * 3;
    while lines.len() < MIN_PLANTED + 40 && n < per_rule * 40 {
        for (ri, g) in generators.iter().enumerate() {
            if let Some((text, secret)) = g.generate(&mut rng, n) {
                lines.push((ri, text, secret));
            }
        }
        n += 1;
    }
    println!("rules without enough generated secrets: {ungeneratable:?}");
    for i in (1..lines.len()).rev() {
        lines.swap(i, rng.gen_range(0..=i));
    }

    let dir = tempfile::tempdir().unwrap();
    let mut planted: Vec<Planted> = Vec::new();
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for (i, chunk) in lines.chunks(4).enumerate() {
        let (kind, comment) = KINDS[i % KINDS.len()];
        let name = file_name(kind, i);
        let mut text = String::new();
        for (ri, line, secret) in chunk {
            for _ in 0..rng.gen_range(2..6) {
                text.push_str(FILLER[rng.gen_range(0..FILLER.len())]);
                text.push('\n');
            }
            text.push_str(&decoy(&mut rng, &negatives));
            text.push('\n');
            // Prefix single-line examples (a comment, a log header) when
            // the rule's regex still sees the secret there.
            let first = text.matches('\n').count() as u64 + 1;
            let wrapped = format!("{comment}{line}");
            let m = &generators[*ri].matcher;
            if !line.contains('\n')
                && m.secrets(&wrapped)
                    .iter()
                    .any(|&(a, b)| &wrapped[a..b] == secret)
            {
                text.push_str(&wrapped);
            } else {
                text.push_str(line);
            }
            text.push('\n');
            planted.push(Planted {
                path: name.clone(),
                rule: rules[*ri].id.clone(),
                sha: sha(secret),
                lines: (first, first + line.matches('\n').count() as u64),
            });
        }
        files.insert(name, text);
    }
    assert!(
        planted.len() >= MIN_PLANTED,
        "only {} secrets planted",
        planted.len()
    );

    // A fifth of the files go into archives: zip, and tar.gz holding a jar.
    let names: Vec<String> = files.keys().cloned().collect();
    let mut renamed: HashMap<String, String> = HashMap::new();
    for (a, group) in names.chunks(10).enumerate().filter(|(a, _)| a % 5 == 0) {
        let entries: Vec<(String, String)> = group
            .iter()
            .map(|n| (n.clone(), files.remove(n).unwrap()))
            .collect();
        let zip = zip_bytes(&entries);
        let archive = if a % 10 == 0 {
            let path = format!("dist/bundle{a}.zip");
            write(dir.path(), &path, &zip);
            path
        } else {
            let path = format!("dist/release{a}.tar.gz");
            write(
                dir.path(),
                &path,
                &gzip(&tar_bytes(&[("lib/app.jar", &zip)])),
            );
            format!("{path}!/lib/app.jar")
        };
        for (n, _) in &entries {
            renamed.insert(n.clone(), format!("{archive}!/{n}"));
        }
    }
    for (name, text) in &files {
        write(dir.path(), name, text.as_bytes());
    }
    for p in &mut planted {
        if let Some(r) = renamed.get(&p.path) {
            p.path = r.clone();
        }
    }

    let set = Arc::new(RuleSet::new(rules.clone()).unwrap());
    let report = scan_paths(
        &[dir.path().to_path_buf()],
        &WalkOptions::default().artifacts(true),
        set,
        &ScanOptions::default(),
        None,
    )
    .unwrap();
    let secrets: Vec<_> = report
        .findings
        .iter()
        .filter(|f| matches!(f.kind, FindingKind::Secret | FindingKind::Dotenv))
        .collect();
    let found: HashSet<(&str, &str, &str)> = secrets
        .iter()
        .map(|f| {
            (
                f.path.as_str(),
                f.rule_id.as_str(),
                f.secret_sha256.as_str(),
            )
        })
        .collect();
    let planted_keys: HashSet<(&str, &str)> = planted
        .iter()
        .map(|p| (p.path.as_str(), p.sha.as_str()))
        .collect();
    // Other secrets inside a planted example (a key id next to its key, a
    // long token a generic rule also sees) are true findings too.
    let mut planted_lines: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for p in &planted {
        planted_lines
            .entry(p.path.as_str())
            .or_default()
            .push(p.lines);
    }
    let on_planted_line = |path: &str, line: u64| {
        planted_lines
            .get(path)
            .is_some_and(|spans| spans.iter().any(|&(a, b)| (a..=b).contains(&line)))
    };

    let mut misses: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &planted {
        if !found.contains(&(p.path.as_str(), p.rule.as_str(), p.sha.as_str())) {
            *misses.entry(&p.rule).or_default() += 1;
        }
    }
    let mut false_positives: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for f in &secrets {
        if !planted_keys.contains(&(f.path.as_str(), f.secret_sha256.as_str()))
            && !on_planted_line(&f.path, f.line)
        {
            false_positives
                .entry(&f.rule_id)
                .or_default()
                .push(format!("{}:{} {}", f.path, f.line, f.redacted));
        }
    }
    let missed: usize = misses.values().sum();
    let fp: usize = false_positives.values().map(Vec::len).sum();
    let recall = 1.0 - missed as f64 / planted.len() as f64;
    let precision = (secrets.len() - fp) as f64 / secrets.len().max(1) as f64;
    let notices: Vec<String> = report
        .findings
        .iter()
        .filter(|f| !matches!(f.kind, FindingKind::Secret | FindingKind::Dotenv))
        .map(|f| format!("{} {}", f.path, f.message))
        .collect();
    let summary = format!(
        "rules {}, planted {}, findings {}, recall {:.4}, precision {:.4}\n\
         per-rule misses: {misses:#?}\nfalse positives: {false_positives:#?}\n\
         rules without enough generated secrets: {ungeneratable:?}\nnotices: {notices:?}",
        rules.len(),
        planted.len(),
        secrets.len(),
        recall,
        precision
    );
    println!("{summary}");
    assert!(notices.is_empty(), "{summary}");
    // The generator must reach nearly every rule, or the figures say little.
    assert!(ungeneratable.len() * 10 <= rules.len(), "{summary}");
    assert!(recall >= 0.98, "recall below 98%\n{summary}");
    assert!(precision >= 0.95, "precision below 95%\n{summary}");
}

fn write(root: &Path, rel: &str, data: &[u8]) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    p
}

fn zip_bytes(entries: &[(String, String)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn tar_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
