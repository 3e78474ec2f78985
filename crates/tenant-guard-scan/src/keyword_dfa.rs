//! A copy of the keyword automaton laid out for the search loop, and that
//! loop.
//!
//! `aho_corasick`'s DFA is general: every transition is bounds checked, a
//! byte is first mapped to its class, and its match test compares each
//! state against a limit. [`KeywordDfa`] is built from that DFA (so its
//! states, and the order of the keywords each one reports, are the same)
//! with one row of 256 entries per state, indexed by the byte itself (no
//! class lookup: one load a byte besides the byte's), a fixed-size table
//! indexed under a mask (no bounds check) and the match flag in each
//! state's number (the rows of matching states in the upper half of the
//! table), so that one test covers all stripes.
//!
//! One walk is bound by the latency of its chain of loads (the next state
//! is the address of the next load), so a buffer is cut into
//! [`STRIPES`] stripes walked in step: their chains overlap. The loop only
//! notes where a stripe matched (the byte index and the states, in a small
//! buffer) and goes on; the keywords are recorded outside it, so that it
//! carries little besides the stripes, their states and the table.

use aho_corasick::Anchored;
use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;

/// Set in the states that report keywords: their rows fill the upper half
/// of the table, the other states' rows its lower half, so that one test of
/// the states of all stripes tells whether any of them reports a keyword.
const MATCH: u32 = (TABLE / 2) as u32;
/// Stripes walked in step. Six chains of loads overlap enough; more
/// stripes than this no longer fit in the registers (measured: 4, 6, 8 and
/// 10 stripes, in `docs/BENCHMARKS.md`).
pub(crate) const STRIPES: usize = 6;
/// Buffers shorter than this are searched as one stripe. Each stripe but
/// the first walks the longest keyword's length again (at most a few dozen
/// bytes), and one stripe walks three to four times slower than six in
/// step: striping pays from about a kilobyte on (most source files are
/// longer; measured in `docs/BENCHMARKS.md`).
pub(crate) const MIN_STRIPED: usize = 1 << 10;
/// Entries of the transition table: a power of two, so that an index
/// masked with `TABLE - 1` needs no bounds check. A state's row has one
/// entry per byte value, so the table holds 2,048 rows in each half; only
/// the rows in use are written (the rest stay untouched zero pages).
/// Automata with more states fall back to the `aho_corasick` DFA; the
/// built-in rules use 1,390 rows of the lower half and 359 of the upper.
const TABLE: usize = 1 << 20;
/// Most stops noted by one [`KeywordDfa::walk`] call.
const STOPS: usize = 64;

/// Where the stripes of a [`KeywordDfa::walk`] call were in states that
/// report keywords: the index of the byte after which they were, and the
/// states of all stripes there.
struct Stops {
    len: usize,
    at: [usize; STOPS],
    states: [[u32; STRIPES]; STOPS],
}

/// `map[s]`, the vector grown with `fill` as needed: the source DFA's
/// state ids are small integers.
fn entry<T: Copy>(map: &mut Vec<T>, s: StateID, fill: T) -> &mut T {
    if map.len() <= s.as_usize() {
        map.resize(s.as_usize() + 1, fill);
    }
    &mut map[s.as_usize()]
}

/// How a buffer is cut into stripes: `k` of them (1 for a short buffer),
/// stripe `j` owning the keywords that end in `owned[j]..end[j]` and
/// searched from `pos[j]`, `reach` bytes (the longest keyword) earlier, so
/// that a keyword crossing into it is seen whole.
pub(crate) struct Stripes {
    pub(crate) k: usize,
    pub(crate) owned: [usize; STRIPES],
    pub(crate) pos: [usize; STRIPES],
    pub(crate) end: [usize; STRIPES],
}

impl Stripes {
    /// The `count` (at most [`STRIPES`]) stripes of a buffer of `len`
    /// bytes, or one for a short buffer; empties the `out` vectors of the
    /// stripes used.
    pub(crate) fn new(
        len: usize,
        reach: usize,
        count: usize,
        out: &mut Vec<Vec<(usize, u32)>>,
    ) -> Stripes {
        let k = if len < MIN_STRIPED {
            1
        } else {
            count.min(STRIPES)
        };
        out.resize_with(STRIPES, Vec::new);
        let mut s = Stripes {
            k,
            owned: [0; STRIPES],
            pos: [0; STRIPES],
            end: [0; STRIPES],
        };
        for (j, stripe) in out.iter_mut().enumerate().take(k) {
            s.owned[j] = len * j / k;
            s.pos[j] = s.owned[j].saturating_sub(reach);
            s.end[j] = len * (j + 1) / k;
            stripe.clear();
        }
        s
    }
}

/// The keyword automaton in the form [`KeywordDfa::hits`] walks.
pub(crate) struct KeywordDfa {
    /// `trans[state | byte]`: the next state, the offset of its row (a
    /// multiple of 256), at or above [`MATCH`] if it reports keywords.
    /// Indexing by the byte itself spares a lookup of its class.
    trans: Box<[u32; TABLE]>,
    /// The start state.
    start: u32,
    /// For each state that reports keywords, in the order of their rows,
    /// the range of `patterns` it reports.
    matches: Vec<(u32, u32)>,
    /// Keyword ids reported by the states, in the source DFA's order.
    patterns: Vec<u32>,
}

impl std::fmt::Debug for KeywordDfa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeywordDfa")
            .field("reporting_states", &self.matches.len())
            .finish_non_exhaustive()
    }
}

impl KeywordDfa {
    /// Copies `dfa`, an ASCII-case-insensitive automaton built without a
    /// prefilter. None if it does not fit the table.
    pub(crate) fn new(dfa: &DFA) -> Option<KeywordDfa> {
        let start = dfa.start_state(Anchored::No).ok()?;
        // States numbered in breadth-first order from the start.
        let mut seen: Vec<bool> = Vec::new();
        *entry(&mut seen, start, false) = true;
        let mut order = vec![start];
        let mut next = 0;
        while next < order.len() {
            let state = order[next];
            next += 1;
            for byte in 0..=255u8 {
                let to = dfa.next_state(Anchored::No, state, byte);
                if !std::mem::replace(entry(&mut seen, to, false), true) {
                    order.push(to);
                }
            }
        }
        // Rows in that order, those of states that report keywords from
        // MATCH on, the others from 0.
        let (reporting, other): (Vec<StateID>, Vec<StateID>) =
            order.iter().partition(|&&s| dfa.is_match(s));
        let half = TABLE / 2;
        if reporting.len().checked_mul(256)? > half || other.len().checked_mul(256)? > half {
            return None;
        }
        let mut row: Vec<u32> = Vec::new();
        for (i, &s) in other.iter().enumerate() {
            *entry(&mut row, s, 0) = (i * 256) as u32;
        }
        for (i, &s) in reporting.iter().enumerate() {
            *entry(&mut row, s, 0) = MATCH + (i * 256) as u32;
        }
        let mut trans: Box<[u32; TABLE]> = vec![0u32; TABLE].into_boxed_slice().try_into().ok()?;
        for &state in &order {
            let from = row[state.as_usize()] as usize;
            for byte in 0..=255u8 {
                trans[from | usize::from(byte)] =
                    row[dfa.next_state(Anchored::No, state, byte).as_usize()];
            }
        }
        let mut matches = Vec::with_capacity(reporting.len());
        let mut patterns = Vec::new();
        for &state in &reporting {
            let from = u32::try_from(patterns.len()).ok()?;
            for m in 0..dfa.match_len(state) {
                patterns.push(dfa.match_pattern(state, m).as_u32());
            }
            matches.push((from, u32::try_from(patterns.len()).ok()?));
        }
        Some(KeywordDfa {
            trans,
            start: row[start.as_usize()],
            matches,
            patterns,
        })
    }

    /// The state after `state` reads `byte`. The mask changes nothing (a
    /// state's row lies within the table) but spares the bounds check.
    #[inline(always)]
    fn step(trans: &[u32; TABLE], state: u32, byte: u8) -> u32 {
        trans[(state | u32::from(byte)) as usize & (TABLE - 1)]
    }

    /// Walks the stripes in step from `states` for as long as the shortest
    /// lasts, noting in `stops` every byte index after which one of them is
    /// in a state that reports keywords, with the states there. Returns the
    /// number of bytes walked: all of them, or fewer once `stops` is full.
    /// `states` holds the states reached.
    #[inline(never)]
    fn walk(
        &self,
        lanes: [&[u8]; STRIPES],
        states: &mut [u32; STRIPES],
        stops: &mut Stops,
    ) -> usize {
        let trans = &*self.trans;
        let n = lanes.iter().map(|l| l.len()).min().unwrap_or(0);
        // Slices of one known length: no bounds checks in the loop.
        let lanes: [&[u8]; STRIPES] = std::array::from_fn(|j| &lanes[j][..n]);
        let mut s = *states;
        let mut walked = n;
        stops.len = 0;
        // The states all advance before the one branch, so their chains
        // overlap. A stop is noted without leaving the loop: hits of common
        // keywords come every few hundred bytes.
        for i in 0..n {
            let mut any = 0;
            for (state, lane) in s.iter_mut().zip(&lanes) {
                *state = Self::step(trans, *state, lane[i]);
                any |= *state;
            }
            if any & MATCH != 0 {
                let m = stops.len;
                stops.at[m] = i;
                stops.states[m] = s;
                stops.len = m + 1;
                if m + 1 == STOPS {
                    walked = i + 1;
                    break;
                }
            }
        }
        *states = s;
        walked
    }

    /// Records the keywords `state` reports (it is in that state after
    /// reading `hay[at]`) if the stripe owns position `at`.
    #[inline(always)]
    fn record(&self, state: u32, at: usize, owned: usize, out: &mut Vec<(usize, u32)>) {
        if state & MATCH != 0 && at >= owned {
            let (from, to) = self.matches[(state - MATCH) as usize / 256];
            for &p in &self.patterns[from as usize..to as usize] {
                out.push((at + 1, p));
            }
        }
    }

    /// Walks `hay[from..to]` one byte at a time from `state`, recording
    /// what the stripe owns: a short buffer, and the stripes' ends.
    fn walk_recording(
        &self,
        hay: &[u8],
        (from, to): (usize, usize),
        state: &mut u32,
        owned: usize,
        out: &mut Vec<(usize, u32)>,
    ) {
        for (at, &byte) in hay.iter().enumerate().take(to).skip(from) {
            *state = Self::step(&self.trans, *state, byte);
            self.record(*state, at, owned, out);
        }
    }

    /// Every keyword occurrence in `hay` (overlapping ones included) as
    /// `(end, pattern)`, in order of `end`, keywords ending at the same
    /// place in the source DFA's order. `reach` is the longest keyword's
    /// length: each stripe starts that many bytes early so that a keyword
    /// crossing a stripe boundary is seen whole by the stripe it ends in.
    #[inline(never)]
    pub(crate) fn hits(
        &self,
        hay: &[u8],
        reach: usize,
        stripes: &mut Vec<Vec<(usize, u32)>>,
        out: &mut Vec<(usize, u32)>,
    ) {
        out.clear();
        let Stripes { k, owned, pos, end } = Stripes::new(hay.len(), reach, STRIPES, stripes);
        let mut state = [self.start; STRIPES];
        let mut done = 0;
        if k == STRIPES {
            // The stripes in step for as long as the shortest one lasts.
            let len = (0..k).map(|j| end[j] - pos[j]).min().unwrap_or(0);
            let mut stops = Stops {
                len: 0,
                at: [0; STOPS],
                states: [[0; STRIPES]; STOPS],
            };
            while done < len {
                let lanes = std::array::from_fn(|j| &hay[pos[j] + done..pos[j] + len]);
                let walked = self.walk(lanes, &mut state, &mut stops);
                for (&i, stop) in stops.at.iter().zip(&stops.states).take(stops.len) {
                    for j in 0..k {
                        self.record(stop[j], pos[j] + done + i, owned[j], &mut stripes[j]);
                    }
                }
                done += walked;
            }
        }
        for j in 0..k {
            self.walk_recording(
                hay,
                (pos[j] + done, end[j]),
                &mut state[j],
                owned[j],
                &mut stripes[j],
            );
        }
        for stripe in &stripes[..k] {
            out.extend_from_slice(stripe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn source(keywords: &[String]) -> DFA {
        aho_corasick::dfa::Builder::new()
            .ascii_case_insensitive(true)
            .prefilter(false)
            .build(keywords)
            .unwrap()
    }

    fn reference(dfa: &DFA, hay: &[u8]) -> Vec<(usize, u32)> {
        // The source DFA walked one byte at a time: every overlapping hit.
        let mut s = dfa.start_state(Anchored::No).unwrap();
        let mut out = Vec::new();
        for (at, &b) in hay.iter().enumerate() {
            s = dfa.next_state(Anchored::No, s, b);
            for m in 0..if dfa.is_match(s) { dfa.match_len(s) } else { 0 } {
                out.push((at + 1, dfa.match_pattern(s, m).as_u32()));
            }
        }
        out
    }

    proptest! {
        #[test]
        fn finds_every_keyword_occurrence_in_the_source_order(
            keywords in proptest::collection::vec("[abcAB_.-]{1,6}", 1..12),
            hay in proptest::collection::vec(proptest::sample::select(b"abcABC_.-x\n".to_vec()), 0..3000),
            long in any::<bool>(),
        ) {
            let mut keywords: Vec<String> = keywords.iter().map(|k| k.to_ascii_lowercase()).collect();
            keywords.sort();
            keywords.dedup();
            let dfa = source(&keywords);
            let compact = KeywordDfa::new(&dfa).unwrap();
            // Repeat the text past the striping threshold half of the time.
            let hay: Vec<u8> = if long {
                hay.iter().copied().cycle().take(MIN_STRIPED + 4097).collect()
            } else {
                hay
            };
            let (mut stripes, mut got) = (Vec::new(), Vec::new());
            compact.hits(&hay, 6, &mut stripes, &mut got);
            prop_assert_eq!(got, reference(&dfa, &hay));
        }
    }

    #[test]
    fn builtin_keywords_fit() {
        let set = crate::RuleSet::builtin().unwrap();
        assert!(matches!(set.prefilter, crate::rules::Prefilter::Compact(_)));
    }
}
