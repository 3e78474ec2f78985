//! The matching engine: an Aho-Corasick keyword prefilter, regex
//! confirmation in windows around keyword hits, then entropy, checksum and
//! placeholder filters. Content is streamed in chunks so memory stays bounded.

use std::io::{self, Read};
use std::sync::Arc;

use crate::canary::Encoding;
use crate::decoy::{is_decoy, shannon_entropy};
use crate::finding::{Finding, FindingKind};
use crate::fingerprint::{FingerprintHit, FingerprintSet};
use aho_corasick::Anchored;
use aho_corasick::automaton::{Automaton, StateID};
use regex::bytes::CaptureLocations;

use crate::keyword_dfa::Stripes;
use crate::rules::{Prefilter, RuleSet};
use crate::suppress::suppress;
use crate::suppress::{InlineAllow, inline_allow};
use crate::{ExceptionCheck, Severity, SuppressionSource};

/// Bytes read per chunk when streaming content: small enough for the
/// buffer to stay in the L2 cache between the kernel's copy into it and the
/// search (8 MiB chunks took more system time), large enough that the
/// overlap searched twice (twice the longest regex window, 32 KiB with the
/// built-in rules) stays a few percent.
const CHUNK: usize = 1 << 20;
/// Leading bytes looked at to decide whether content is binary.
const BINARY_SNIFF: usize = 8192;

/// Options of a [`Scanner`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ScanOptions {
    /// Keep the full secret in each finding (`--show-secrets`).
    pub show_secrets: bool,
    /// Decides whether an exception id named by a suppression is in force.
    pub exception_check: ExceptionCheck,
    /// Report every rule's match, even where a more specific rule reports
    /// the same secret (`rules check` proves each rule this way).
    pub all_matches: bool,
    /// Fingerprints of vault secrets to recognise (`--fingerprints`).
    pub fingerprints: Vec<Arc<FingerprintSet>>,
}

impl ScanOptions {
    /// Sets [`ScanOptions::show_secrets`].
    pub fn show_secrets(mut self, yes: bool) -> Self {
        self.show_secrets = yes;
        self
    }

    /// Sets [`ScanOptions::all_matches`].
    pub fn all_matches(mut self, yes: bool) -> Self {
        self.all_matches = yes;
        self
    }

    /// Adds a set to [`ScanOptions::fingerprints`].
    pub fn fingerprints(mut self, set: Arc<FingerprintSet>) -> Self {
        self.fingerprints.push(set);
        self
    }

    /// Sets [`ScanOptions::exception_check`].
    pub fn exception_check(mut self, check: ExceptionCheck) -> Self {
        self.exception_check = check;
        self
    }
}

/// A confirmed match: rule index and the secret's byte span in the haystack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawMatch {
    pub(crate) rule: u32,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Reusable per-thread state of [`find_matches`].
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    open: Vec<Option<(usize, usize)>>,
    touched: Vec<u32>,
    windows: Vec<(u32, usize, usize)>,
    /// Keyword hits of each stripe: (end, pattern).
    stripes: Vec<Vec<(usize, u32)>>,
    hits: Vec<(usize, u32)>,
    captures: Vec<Option<CaptureLocations>>,
}

/// Stripes walked in step by [`keyword_hits`], for automata too large for
/// [`crate::keyword_dfa::KeywordDfa`].
const FALLBACK_STRIPES: usize = 4;

/// Every keyword occurrence in `hay` (overlapping ones included) as
/// `(end, pattern)`, in order of `end`. `reach` is the longest keyword's
/// length: each stripe starts that many bytes early so that a keyword
/// crossing a stripe boundary is seen whole by the stripe it ends in.
/// Not inlined: on its own, the hot loop keeps its states in registers.
#[inline(never)]
fn keyword_hits<A: Automaton>(
    aut: &A,
    hay: &[u8],
    reach: usize,
    stripes: &mut Vec<Vec<(usize, u32)>>,
    out: &mut Vec<(usize, u32)>,
) {
    out.clear();
    let Ok(start) = aut.start_state(Anchored::No) else {
        return;
    };
    let Stripes { k, owned, pos, end } = Stripes::new(hay.len(), reach, FALLBACK_STRIPES, stripes);
    let mut state = [start; FALLBACK_STRIPES];
    let mut done = 0;
    if k == FALLBACK_STRIPES {
        // Slices of equal length let the compiler drop the bounds checks;
        // the four states live in registers and advance before any branch,
        // so the four dependency chains overlap.
        done = (0..k).map(|j| end[j] - pos[j]).min().unwrap_or(0);
        let [a, b, c, d]: [&[u8]; FALLBACK_STRIPES] =
            std::array::from_fn(|j| &hay[pos[j]..pos[j] + done]);
        let [mut s0, mut s1, mut s2, mut s3] = state;
        let bytes = a.iter().zip(b).zip(c).zip(d);
        for (i, (((&x0, &x1), &x2), &x3)) in bytes.enumerate() {
            s0 = aut.next_state(Anchored::No, s0, x0);
            s1 = aut.next_state(Anchored::No, s1, x1);
            s2 = aut.next_state(Anchored::No, s2, x2);
            s3 = aut.next_state(Anchored::No, s3, x3);
            if aut.is_special(s0) | aut.is_special(s1) | aut.is_special(s2) | aut.is_special(s3) {
                for (j, s) in [s0, s1, s2, s3].into_iter().enumerate() {
                    record(aut, s, pos[j] + i, owned[j], &mut stripes[j]);
                }
            }
        }
        state = [s0, s1, s2, s3];
    }
    for j in 0..k {
        for (at, &byte) in hay.iter().enumerate().take(end[j]).skip(pos[j] + done) {
            state[j] = aut.next_state(Anchored::No, state[j], byte);
            record(aut, state[j], at, owned[j], &mut stripes[j]);
        }
    }
    for stripe in &stripes[..k] {
        out.extend_from_slice(stripe);
    }
}

/// Records the keywords that end at `at` (the automaton is in `state` after
/// reading that byte), if the stripe owns that position.
#[inline(always)]
fn record<A: Automaton>(
    aut: &A,
    state: StateID,
    at: usize,
    owned: usize,
    out: &mut Vec<(usize, u32)>,
) {
    if aut.is_special(state) && aut.is_match(state) && at >= owned {
        for i in 0..aut.match_len(state) {
            out.push((at + 1, aut.match_pattern(state, i).as_u32()));
        }
    }
}

/// Finds every confirmed match of `rules` in `hay`, in no particular order.
pub(crate) fn find_matches(
    rules: &RuleSet,
    hay: &[u8],
    scratch: &mut Scratch,
    out: &mut Vec<RawMatch>,
) {
    scratch.open.clear();
    scratch.open.resize(rules.rules.len(), None);
    scratch.touched.clear();
    scratch.windows.clear();
    let mut hits = std::mem::take(&mut scratch.hits);
    match &rules.prefilter {
        Prefilter::Compact(a) => a.hits(hay, rules.max_keyword, &mut scratch.stripes, &mut hits),
        Prefilter::Dfa(a) => {
            keyword_hits(a, hay, rules.max_keyword, &mut scratch.stripes, &mut hits)
        }
        Prefilter::Nfa(a) => {
            keyword_hits(a, hay, rules.max_keyword, &mut scratch.stripes, &mut hits)
        }
    }
    for &(hit_end, pattern) in &hits {
        let hit_start = hit_end - rules.keyword_lens[pattern as usize];
        for &r in &rules.keyword_rules[pattern as usize] {
            let rule = &rules.rules[r as usize].rule;
            if rule
                .followed_by
                .as_ref()
                .is_some_and(|f| !f.found(hay, hit_end))
            {
                continue;
            }
            let slot = &mut scratch.open[r as usize];
            // A hit inside an open window that already reaches its line's
            // end adds nothing to it.
            if let Some((s, e)) = *slot {
                if hit_start >= s
                    && hit_end <= e
                    && !rule.multiline
                    && hay.get(e).is_none_or(|&b| b == b'\n')
                {
                    continue;
                }
            }
            let (lo, hi) = window(hay, hit_start, hit_end, rule.max_match_len, rule.multiline);
            match *slot {
                Some((s, e)) if lo <= e => *slot = Some((s.min(lo), e.max(hi))),
                Some((s, e)) => {
                    scratch.windows.push((r, s, e));
                    *slot = Some((lo, hi));
                }
                None => {
                    *slot = Some((lo, hi));
                    scratch.touched.push(r);
                }
            }
        }
    }
    scratch.hits = hits;
    for &r in &scratch.touched {
        if let Some((s, e)) = scratch.open[r as usize] {
            scratch.windows.push((r, s, e));
        }
    }
    scratch.captures.resize_with(rules.rules.len(), || None);
    for &(r, lo, hi) in &scratch.windows {
        let compiled = &rules.rules[r as usize];
        let matcher = compiled.matcher();
        let locs =
            scratch.captures[r as usize].get_or_insert_with(|| matcher.regex.capture_locations());
        // The regex sees the window only, so `^` matches at its start (the
        // line's start unless the rule is multiline).
        let window = &hay[lo..hi];
        let mut at = 0;
        while at <= window.len() {
            let Some(whole) = matcher.regex.captures_read_at(locs, window, at) else {
                break;
            };
            // An empty match must not stall the search.
            at = if whole.end() > whole.start() {
                whole.end()
            } else {
                whole.end() + 1
            };
            let Some((start, end)) = locs.get(matcher.group) else {
                continue;
            };
            let (start, end) = (lo + start, lo + end);
            if accept(compiled, &hay[start..end]) {
                out.push(RawMatch {
                    rule: r,
                    start,
                    end,
                });
            }
        }
    }
}

/// Drops the matches another match makes redundant, keeping one finding per
/// secret span: a generic rule's match loses to an overlapping match of a
/// non-generic rule, and of two equally specific matches with the same span
/// the one of the earlier rule is kept. `matches` must be sorted by start.
pub(crate) fn drop_redundant(rules: &RuleSet, matches: &mut Vec<RawMatch>, drop: &mut Vec<bool>) {
    drop.clear();
    drop.resize(matches.len(), false);
    let generic = |m: &RawMatch| rules.rules[m.rule as usize].rule.generic;
    for i in 0..matches.len() {
        let a = matches[i];
        for j in i + 1..matches.len() {
            let b = matches[j];
            if b.start >= a.end {
                break;
            }
            match (generic(&a), generic(&b)) {
                (true, false) => drop[i] = true,
                (false, true) => drop[j] = true,
                _ if (a.start, a.end) == (b.start, b.end) => {
                    drop[if a.rule <= b.rule { j } else { i }] = true;
                }
                _ => {}
            }
        }
    }
    let mut k = 0;
    matches.retain(|_| {
        k += 1;
        !drop[k - 1]
    });
}

/// The regex window around a keyword hit: ±`len` bytes, within the hit's line
/// unless the rule is multiline.
fn window(hay: &[u8], start: usize, end: usize, len: usize, multiline: bool) -> (usize, usize) {
    let lo = start.saturating_sub(len);
    let hi = end.saturating_add(len).min(hay.len());
    if multiline {
        return (lo, hi);
    }
    let lo = memchr::memrchr(b'\n', &hay[lo..start]).map_or(lo, |p| lo + p + 1);
    let hi = memchr::memchr(b'\n', &hay[end..hi]).map_or(hi, |p| end + p);
    (lo, hi)
}

/// Entropy, checksum and placeholder filters on a regex-confirmed secret.
fn accept(compiled: &crate::rules::CompiledRule, secret: &[u8]) -> bool {
    let rule = &compiled.rule;
    if secret.is_empty() {
        return false;
    }
    if let Some(min) = rule.entropy {
        if shannon_entropy(secret) < min {
            return false;
        }
    }
    if let Some(check) = rule.checksum {
        // A verified checksum proves the value was minted by the provider:
        // random bodies contain `xxxx` or `12345678` now and then, and such a
        // token is still real, so the placeholder filter does not apply.
        return check.verify(secret);
    }
    !is_decoy(secret)
}

/// Returns true for `.env` and `.env.<name>` files, except the documentation
/// variants `.env.example`, `.env.sample`, `.env.template` and `.env.dist`.
pub fn is_dotenv_path(path: &str) -> bool {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    match name.strip_prefix(".env") {
        Some("") => true,
        Some(rest) => rest.strip_prefix('.').is_some_and(|suffix| {
            !suffix.is_empty() && !matches!(suffix, "example" | "sample" | "template" | "dist")
        }),
        None => false,
    }
}

/// Scans bytes and readers with a rule set. Cheap to clone: the rules are
/// shared, the buffers are per instance, so give each thread its own clone.
#[derive(Debug)]
pub struct Scanner {
    rules: Arc<RuleSet>,
    options: ScanOptions,
    buf: Vec<u8>,
    scratch: Scratch,
    matches: Vec<RawMatch>,
    drop: Vec<bool>,
    /// Fingerprint hits of the current buffer: (set index, hit).
    vault_hits: Vec<(usize, FingerprintHit)>,
    found: Vec<FingerprintHit>,
}

impl Clone for Scanner {
    fn clone(&self) -> Self {
        Scanner::new(self.rules.clone(), self.options.clone())
    }
}

/// Where the start of the current buffer is in the whole stream.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// Buffer index counted up to.
    index: usize,
    /// Line number at `index`.
    line: u64,
    /// Absolute offset of the start of that line.
    line_start: u64,
}

impl Scanner {
    /// A scanner for `rules`.
    pub fn new(rules: Arc<RuleSet>, options: ScanOptions) -> Scanner {
        Scanner {
            rules,
            options,
            buf: Vec::new(),
            scratch: Scratch::default(),
            matches: Vec::new(),
            drop: Vec::new(),
            vault_hits: Vec::new(),
            found: Vec::new(),
        }
    }

    /// The rule set this scanner runs.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Scans `data` as the content of the file `path` and returns its
    /// findings (including ones suppressed inline, marked as such).
    pub fn scan_bytes(&mut self, path: &str, data: &[u8]) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut reader = data;
        self.scan_reader(path, &mut reader, &mut out)
            .expect("reading from a slice cannot fail");
        out
    }

    /// Scans everything `reader` yields as the content of `path`, appending
    /// findings to `out`. Memory use is bounded by the chunk size, whatever
    /// the length of the content. Binary content (a NUL byte in the first
    /// 8 KiB) is reduced to its printable ASCII strings first.
    pub fn scan_reader(
        &mut self,
        path: &str,
        reader: &mut dyn Read,
        out: &mut Vec<Finding>,
    ) -> io::Result<()> {
        let longest_form = self
            .options
            .fingerprints
            .iter()
            .map(|f| f.max_form_len())
            .max()
            .unwrap_or(0);
        let overlap = (self.rules.max_window * 2).max(4096).max(longest_form);
        let target = CHUNK + overlap;
        let mut buf = std::mem::take(&mut self.buf);
        if buf.len() < target {
            buf.resize(target, 0);
        }
        let result = self.scan_chunks(path, reader, &mut buf, overlap, out);
        self.buf = buf;
        result
    }

    fn scan_chunks(
        &mut self,
        path: &str,
        reader: &mut dyn Read,
        buf: &mut [u8],
        overlap: usize,
        out: &mut Vec<Finding>,
    ) -> io::Result<()> {
        let dotenv = is_dotenv_path(path);
        let mut len = 0;
        let mut base: u64 = 0;
        let mut binary = None;
        let mut cur = Cursor {
            index: 0,
            line: 1,
            line_start: 0,
        };
        loop {
            let filled_from = len;
            let eof = fill(reader, buf, &mut len)?;
            let binary = *binary
                .get_or_insert_with(|| memchr::memchr(0, &buf[..len.min(BINARY_SNIFF)]).is_some());
            if binary {
                to_printable_strings(&mut buf[filled_from..len]);
            }
            let hay = &buf[..len];
            let own_end = if eof { len } else { cut_point(hay, overlap) };
            self.matches.clear();
            find_matches(&self.rules, hay, &mut self.scratch, &mut self.matches);
            self.matches
                .sort_unstable_by_key(|m| (m.start, m.rule, m.end));
            self.matches.dedup();
            if !self.options.all_matches {
                drop_redundant(&self.rules, &mut self.matches, &mut self.drop);
            }
            self.matches.retain(|m| m.start < own_end);
            self.vault_hits.clear();
            for (i, set) in self.options.fingerprints.iter().enumerate() {
                self.found.clear();
                set.find(hay, own_end, &mut self.found);
                self.vault_hits.extend(self.found.iter().map(|h| (i, *h)));
            }
            self.vault_hits
                .sort_by_key(|(i, h)| (h.start, *i, h.version));
            // Findings in order of start, so that lines are counted forwards.
            let mut locate = |start: usize| {
                if binary {
                    (1, base + start as u64 + 1)
                } else {
                    advance(hay, &mut cur, base, start);
                    (cur.line, base + start as u64 - cur.line_start + 1)
                }
            };
            let mut vault = self.vault_hits.iter().peekable();
            for m in &self.matches {
                while let Some((set, hit)) = vault.next_if(|(_, h)| h.start <= m.start) {
                    let (line, column) = locate(hit.start);
                    out.push(self.vault_finding(path, hay, *set, hit, line, column));
                }
                let (line, column) = locate(m.start);
                out.push(self.finding(path, dotenv, hay, *m, line, column));
            }
            for (set, hit) in vault {
                let (line, column) = locate(hit.start);
                out.push(self.vault_finding(path, hay, *set, hit, line, column));
            }
            if eof {
                return Ok(());
            }
            if !binary {
                advance(hay, &mut cur, base, own_end);
            }
            buf.copy_within(own_end..len, 0);
            len -= own_end;
            base += own_end as u64;
            cur.index = 0;
        }
    }

    fn finding(
        &self,
        path: &str,
        dotenv: bool,
        hay: &[u8],
        m: RawMatch,
        line: u64,
        column: u64,
    ) -> Finding {
        let rule = &self.rules.rules[m.rule as usize].rule;
        let (kind, severity, message) = if dotenv {
            (
                FindingKind::Dotenv,
                rule.severity.max(Severity::High),
                format!(
                    "{} in a .env file: global .env files must hold no secrets",
                    rule.name
                ),
            )
        } else {
            (FindingKind::Secret, rule.severity, rule.name.clone())
        };
        let secret = &hay[m.start..m.end];
        let mut finding = Finding::new(
            &rule.id,
            kind,
            path,
            line,
            column,
            severity,
            message,
            secret,
            self.options.show_secrets,
        );
        self.inline_allow(&mut finding, hay, m.start);
        finding
    }

    /// The finding for a fingerprinted vault secret: its path and version,
    /// hashed for the baseline fingerprint; nothing of the value, even with
    /// `--show-secrets`.
    fn vault_finding(
        &self,
        path: &str,
        hay: &[u8],
        set: usize,
        hit: &FingerprintHit,
        line: u64,
        column: u64,
    ) -> Finding {
        let set = &self.options.fingerprints[set];
        let v = &set.versions()[hit.version];
        let form = match hit.encoding {
            Encoding::Raw => String::new(),
            other => format!(", {other}"),
        };
        let message = format!(
            "the value of vault secret {} (version {}{form})",
            v.path, v.version
        );
        let identity = format!("{}#{}", v.path, v.version);
        let mut finding = Finding::new(
            FindingKind::VaultSecret.as_str(),
            FindingKind::VaultSecret,
            path,
            line,
            column,
            Severity::Critical,
            message,
            identity.as_bytes(),
            false,
        );
        finding.redacted = format!("…({} chars)", hit.len);
        self.inline_allow(&mut finding, hay, hit.start);
        finding
    }

    /// Applies a `tenant-guard:allow ADR-NNN` on the line holding `at`.
    fn inline_allow(&self, finding: &mut Finding, hay: &[u8], at: usize) {
        let line_lo = memchr::memrchr(b'\n', &hay[..at]).map_or(0, |p| p + 1);
        let line_hi = memchr::memchr(b'\n', &hay[at..]).map_or(hay.len(), |p| at + p);
        match inline_allow(&hay[line_lo..line_hi]) {
            InlineAllow::None => {}
            InlineAllow::MissingId => {
                finding.note = Some(
                    "`tenant-guard:allow` without an exception id (ADR-NNN) does not suppress"
                        .into(),
                );
            }
            InlineAllow::Id(id) => {
                suppress(
                    finding,
                    SuppressionSource::Inline,
                    &id,
                    &self.options.exception_check,
                );
            }
        }
    }
}

/// Reads into `buf[*len..]` until it is full or the reader ends; returns true at the end.
fn fill(reader: &mut dyn Read, buf: &mut [u8], len: &mut usize) -> io::Result<bool> {
    while *len < buf.len() {
        match reader.read(&mut buf[*len..]) {
            Ok(0) => return Ok(true),
            Ok(n) => *len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Where this buffer's ownership of matches ends: `overlap` bytes before its
/// end, moved back to a line start when one is near so the next chunk starts
/// at a line boundary.
fn cut_point(hay: &[u8], overlap: usize) -> usize {
    let cut = hay.len() - overlap;
    let floor = cut.saturating_sub(overlap);
    memchr::memrchr(b'\n', &hay[floor..cut]).map_or(cut, |p| floor + p + 1)
}

/// Moves `cur` forward to `to`, counting lines.
fn advance(hay: &[u8], cur: &mut Cursor, base: u64, to: usize) {
    if to <= cur.index {
        return;
    }
    let span = &hay[cur.index..to];
    if let Some(last) = memchr::memrchr(b'\n', span) {
        cur.line += count_newlines(span) as u64;
        cur.line_start = base + (cur.index + last + 1) as u64;
    }
    cur.index = to;
}

/// Number of `\n` bytes in `bytes` (`memchr`'s vectorized count).
fn count_newlines(bytes: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', bytes).count()
}

/// Replaces every byte that is not printable ASCII (or tab) with a newline,
/// which leaves the strings `strings(1)` would print, each on its own line.
fn to_printable_strings(bytes: &mut [u8]) {
    for b in bytes {
        if !(b.is_ascii_graphic() || *b == b' ' || *b == b'\t') {
            *b = b'\n';
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyword_dfa::MIN_STRIPED;
    use crate::rules::tests::rule;

    fn scanner(rules: Vec<crate::Rule>) -> Scanner {
        Scanner::new(
            Arc::new(RuleSet::new(rules).unwrap()),
            ScanOptions::default(),
        )
    }

    fn token_rule() -> crate::Rule {
        rule("tok", r"\b(tok_[A-Za-z0-9]{20})\b", &["tok_"])
    }

    const TOKEN: &str = "tok_Q3v9LmX2pR7sK1wZ8yBn";
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    #[test]
    fn finds_line_and_column() {
        let mut s = scanner(vec![token_rule()]);
        let text = format!("a\nbb\n  key = {TOKEN}\n");
        let f = s.scan_bytes("x.py", text.as_bytes());
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].line, f[0].column), (3, 9));
        assert_eq!(f[0].kind, FindingKind::Secret);
        assert_eq!(f[0].redacted, "tok_…(24 chars)");
    }

    #[test]
    fn keyword_is_case_insensitive_but_regex_decides() {
        let mut s = scanner(vec![token_rule()]);
        assert!(s.scan_bytes("x", b"TOK_Q3v9LmX2pR7sK1wZ8yBn").is_empty());
        assert!(s.scan_bytes("x", b"tok_short").is_empty());
    }

    #[test]
    fn window_stays_on_the_line() {
        // The keyword is on line 1, the rest of the pattern on line 2.
        let mut s = scanner(vec![rule("kv", r"secret=\s*([a-z0-9]{16})", &["secret="])]);
        assert!(s.scan_bytes("x", b"secret=\nq3v9lmx2pr7sk1wz").is_empty());
        let mut m = scanner(vec![crate::Rule {
            multiline: true,
            ..rule("kv", r"secret=\s*([a-z0-9]{16})", &["secret="])
        }]);
        assert_eq!(m.scan_bytes("x", b"secret=\nq3v9lmx2pr7sk1wz").len(), 1);
    }

    #[test]
    fn entropy_and_decoys_filter() {
        let mut r = rule("kv", r"key=([A-Za-z0-9]{16})", &["key="]);
        r.entropy = Some(3.5);
        let mut s = scanner(vec![r]);
        assert!(s.scan_bytes("x", b"key=aabbaabbaabbaabb").is_empty());
        assert!(s.scan_bytes("x", b"key=EXAMPLEEXAMPLE12").is_empty());
        assert_eq!(s.scan_bytes("x", b"key=Q3v9LmX2pR7sK1wZ").len(), 1);
    }

    #[test]
    fn a_verified_checksum_skips_the_decoy_filter() {
        // A random body holds `xxxx` now and then; with a valid checksum it
        // is a real token and must be reported.
        let mut r = rule("mcp", r"\b(smcpt_[0-9A-Za-z]{49})\b", &["smcpt_"]);
        r.checksum = Some(crate::Checksum::SecretMcp);
        let mut s = scanner(vec![r]);
        let body = "smcpt_bJtIvbFy9qoMfgjJnlxxXxx0eP7bwgSMLh05sV6wg0E";
        let sum = crate::checksum::base62_crc32(body.as_bytes());
        let token = format!("{body}{}", std::str::from_utf8(&sum).unwrap());
        assert_eq!(s.scan_bytes("x", format!("T={token}").as_bytes()).len(), 1);
        let mut bad = token.into_bytes();
        bad[10] = if bad[10] == b'a' { b'b' } else { b'a' };
        let mut line = b"T=".to_vec();
        line.extend_from_slice(&bad);
        assert!(s.scan_bytes("x", &line).is_empty());
    }

    #[test]
    fn dotenv_files_get_their_own_kind() {
        let mut r = token_rule();
        r.severity = Severity::Low;
        let mut s = scanner(vec![r]);
        let f = s.scan_bytes("app/.env.production", format!("T={TOKEN}").as_bytes());
        assert_eq!(f[0].kind, FindingKind::Dotenv);
        assert_eq!(f[0].severity, Severity::High);
        let f = s.scan_bytes("app/.env.example", format!("T={TOKEN}").as_bytes());
        assert_eq!(f[0].kind, FindingKind::Secret);
    }

    #[test]
    fn dotenv_names() {
        for yes in [".env", "a/.env", ".env.local", "x.zip!/.env.production"] {
            assert!(is_dotenv_path(yes), "{yes}");
        }
        for no in [
            ".envrc",
            "a/.env.example",
            ".env.sample",
            ".env.template",
            "env",
            ".env.",
        ] {
            assert!(!is_dotenv_path(no), "{no}");
        }
    }

    #[test]
    fn inline_allow_needs_an_id() {
        let mut s = scanner(vec![token_rule()]);
        let f = s.scan_bytes(
            "x",
            format!("k={TOKEN} # tenant-guard:allow ADR-007\n").as_bytes(),
        );
        assert_eq!(
            f[0].suppression.as_ref().unwrap().exception.as_str(),
            "ADR-007"
        );
        let f = s.scan_bytes("x", format!("k={TOKEN} # tenant-guard:allow\n").as_bytes());
        assert!(f[0].suppression.is_none());
        assert!(
            f[0].note
                .as_ref()
                .unwrap()
                .contains("without an exception id")
        );
    }

    #[test]
    fn exception_hook_can_refuse() {
        fn refuse(_: &crate::ExceptionId) -> crate::Validity {
            crate::Validity::Invalid("unknown exception".into())
        }
        let mut s = Scanner::new(
            Arc::new(RuleSet::new(vec![token_rule()]).unwrap()),
            ScanOptions::default().exception_check(ExceptionCheck::new(refuse)),
        );
        let f = s.scan_bytes(
            "x",
            format!("k={TOKEN} # tenant-guard:allow ADR-007\n").as_bytes(),
        );
        assert!(f[0].suppression.is_none());
        assert!(f[0].note.as_ref().unwrap().contains("unknown exception"));
    }

    #[test]
    fn binary_content_is_scanned_as_strings() {
        let mut s = scanner(vec![token_rule()]);
        let mut data = vec![0u8, 1, 2, 3, 0xff];
        data.extend_from_slice(TOKEN.as_bytes());
        data.extend_from_slice(&[0, 7, 0]);
        let f = s.scan_bytes("lib.so", &data);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].line, f[0].column), (1, 6));
    }

    #[test]
    fn chunk_boundaries_lose_and_duplicate_nothing() {
        // Secrets every ~1 KiB across more than two chunks, some straddling
        // chunk edges, on lines of varying length.
        let mut s = scanner(vec![token_rule()]);
        let mut text = Vec::new();
        let mut expected = Vec::new();
        let mut line = 1u64;
        let mut i = 0usize;
        while text.len() < 2 * CHUNK + 100_000 {
            let pad = "p".repeat(900 + (i * 37) % 300);
            text.extend_from_slice(pad.as_bytes());
            text.push(b' ');
            let col = pad.len() as u64 + 2;
            let body: String = (0..20)
                .map(|k| ALPHABET[(i * 7 + k * 13 + k * k) % 62] as char)
                .collect();
            text.extend_from_slice(format!("tok_{body}").as_bytes());
            text.push(b'\n');
            expected.push((line, col));
            line += 1;
            i += 1;
        }
        let mut reader = &text[..];
        let mut out = Vec::new();
        s.scan_reader("big.txt", &mut reader, &mut out).unwrap();
        let got: Vec<(u64, u64)> = out.iter().map(|f| (f.line, f.column)).collect();
        assert_eq!(got.len(), expected.len());
        assert_eq!(got, expected);
    }

    #[test]
    fn one_finding_per_secret_span() {
        let generic = crate::Rule {
            generic: true,
            ..rule("assign", r"(?i:secret)\s*=\s*(\S+)", &["secret"])
        };
        let twin = rule("tok-twin", r"\b(tok_[A-Za-z0-9]{20})\b", &["tok_"]);
        let head = rule("tok-head", r"\b(tok_[A-Za-z0-9]{4})", &["tok_"]);
        let rules = vec![generic, token_rule(), twin, head];
        let text = format!("secret = {TOKEN}\nsecret = q3v9lmx2pr7sk1wz\n");
        let ids = |all: bool| {
            let mut s = Scanner::new(
                Arc::new(RuleSet::new(rules.clone()).unwrap()),
                ScanOptions::default().all_matches(all),
            );
            let f = s.scan_bytes("x", text.as_bytes());
            f.into_iter()
                .map(|f| (f.line, f.rule_id))
                .collect::<Vec<_>>()
        };
        // The generic rule loses to the specific ones on line 1 and stands
        // alone on line 2; of the two rules with the same span the earlier
        // is kept; a different span (`tok-head`) is another finding.
        let line = |n: u64, id: &str| (n, id.to_string());
        assert_eq!(
            ids(false),
            [line(1, "tok"), line(1, "tok-head"), line(2, "assign")]
        );
        assert_eq!(ids(true).len(), 5);
    }

    #[test]
    fn keywords_across_stripe_boundaries_are_found_once() {
        // Tokens back to back on one line, shifted so that every alignment
        // of a keyword against the stripe boundaries occurs.
        let mut s = scanner(vec![token_rule()]);
        for shift in 0..TOKEN.len() + 1 {
            let mut text = " ".repeat(shift);
            let n = (MIN_STRIPED * 2) / (TOKEN.len() + 1);
            for _ in 0..n {
                text.push_str(TOKEN);
                text.push(' ');
            }
            assert_eq!(s.scan_bytes("x", text.as_bytes()).len(), n, "shift {shift}");
        }
    }

    #[test]
    fn followed_by_skips_hits_without_the_byte() {
        let dot = |within| crate::Rule {
            followed_by: Some(crate::FollowedBy {
                any_of: ".".into(),
                within,
            }),
            ..rule("dot", r"\b(pat[A-Za-z0-9]{4}\.[0-9a-f]{8})\b", &["pat"])
        };
        let text = b"path=/a pat9Qz1.0a1b2c3d\n";
        assert_eq!(scanner(vec![dot(5)]).scan_bytes("x", text).len(), 1);
        // Too short a reach never sees the `.`: the regex is not even run.
        assert!(scanner(vec![dot(4)]).scan_bytes("x", text).is_empty());
    }

    #[test]
    fn striped_search_finds_what_an_overlapping_search_finds() {
        use rand::{Rng, SeedableRng};
        // Keywords that overlap, nest and repeat, in text dense with them,
        // long enough to be striped and short enough not to be.
        let keywords = ["ab", "b", "abc", "bca", "cab", "CaBcA", "aaaa"];
        let dfa = aho_corasick::dfa::Builder::new()
            .ascii_case_insensitive(true)
            .build(keywords)
            .unwrap();
        let nfa = aho_corasick::nfa::contiguous::Builder::new()
            .ascii_case_insensitive(true)
            .build(keywords)
            .unwrap();
        let reference = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(keywords)
            .unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in [
            0,
            1,
            5,
            1000,
            MIN_STRIPED - 1,
            MIN_STRIPED,
            MIN_STRIPED + 3,
            300_001,
        ] {
            let hay: Vec<u8> = (0..len).map(|_| b"abcAC\n"[rng.gen_range(0..6)]).collect();
            let mut want: Vec<(usize, u32)> = reference
                .find_overlapping_iter(&hay)
                .map(|m| (m.end(), m.pattern().as_u32()))
                .collect();
            want.sort_unstable();
            for got in [
                {
                    let (mut stripes, mut out) = (Vec::new(), Vec::new());
                    keyword_hits(&dfa, &hay, 5, &mut stripes, &mut out);
                    out
                },
                {
                    let (mut stripes, mut out) = (Vec::new(), Vec::new());
                    keyword_hits(&nfa, &hay, 5, &mut stripes, &mut out);
                    out
                },
            ] {
                assert!(got.is_sorted_by_key(|h| h.0), "len {len}");
                let mut got = got;
                got.sort_unstable();
                assert_eq!(got, want, "len {len}");
            }
        }
    }
}
