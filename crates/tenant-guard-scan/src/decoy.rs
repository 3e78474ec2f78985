//! Entropy and the placeholder (decoy) filter: values that are obviously not
//! real secrets, as found in documentation and sample configuration.

/// Shannon entropy of `data` in bits per byte.
pub(crate) fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let len = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

/// Words that mark a documentation value, matched ASCII-case-insensitively
/// anywhere in the secret.
const PLACEHOLDER_WORDS: &[&[u8]] = &[
    b"example",
    b"your_",
    b"your-",
    b"yourkey",
    b"yourtoken",
    b"placeholder",
    b"changeme",
    b"change_me",
    b"dummy",
    b"redacted",
    b"replace_me",
    b"replaceme",
    b"insert_",
    b"12345678",
    b"abcdefgh",
    b"********",
];

/// Placeholder runs matched with their case: `xxxx` and `XXXX` mark a
/// documentation value, while a random base62 body contains `xXxx` about
/// once in every 23,000 values, and those are real secrets.
const PLACEHOLDER_RUNS: &[&[u8]] = &[b"xxxx", b"XXXX"];

/// Template syntax that means the value is filled in elsewhere.
const TEMPLATE_MARKS: &[&[u8]] = &[b"${", b"{{", b"$(", b"%(", b"<", b">"];

/// Returns true when `secret` is an obvious placeholder: see docs/SCANNER.md.
pub(crate) fn is_decoy(secret: &[u8]) -> bool {
    if secret.is_empty() {
        return true;
    }
    let lower = secret.to_ascii_lowercase();
    if PLACEHOLDER_WORDS
        .iter()
        .chain(TEMPLATE_MARKS)
        .any(|w| memchr::memmem::find(&lower, w).is_some())
        || PLACEHOLDER_RUNS
            .iter()
            .any(|w| memchr::memmem::find(secret, w).is_some())
    {
        return true;
    }
    // A run of six identical characters, e.g. `000000` or `aaaaaa`.
    let mut run = 1;
    for pair in secret.windows(2) {
        run = if pair[0] == pair[1] { run + 1 } else { 1 };
        if run >= 6 {
            return true;
        }
    }
    // Very few distinct characters in a longer value, e.g. `abababab`.
    if secret.len() >= 8 {
        let mut seen = [false; 256];
        let distinct = secret
            .iter()
            .filter(|&&b| !std::mem::replace(&mut seen[b as usize], true))
            .count();
        if distinct <= 3 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_simple_inputs() {
        assert_eq!(shannon_entropy(b""), 0.0);
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"abab") - 1.0).abs() < 1e-9);
        assert!((shannon_entropy(b"0123456789abcdef") - 4.0).abs() < 1e-9);
    }

    #[test]
    fn decoys_are_recognised() {
        for d in [
            "AKIAIOSFODNN7EXAMPLE",
            "xoxb-your-token-here",
            "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "${API_KEY}",
            "<api-key>",
            "sk_live_000000000000000000000000",
            "abababababab",
            "key123456789",
            "{{ secrets.TOKEN }}",
        ] {
            assert!(is_decoy(d.as_bytes()), "{d} should be a decoy");
        }
    }

    #[test]
    fn random_values_are_not_decoys() {
        for s in [
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ9sT2vB1n",
            "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", // tenant-guard:allow ADR-001 (test value)
            "sk_test_4eC39HqLyjWDarjtT1zdp7dc",         // tenant-guard:allow ADR-001 (test value)
            "bJtIvbFy9qoMfgjJnlxxXxx0eP7bwgSMLh05sV6wg0E", // mixed-case xxXx in a random body
        ] {
            assert!(!is_decoy(s.as_bytes()), "{s} is not a decoy");
        }
    }
}
