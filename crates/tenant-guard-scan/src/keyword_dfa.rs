//! A compact, case-folded copy of the keyword automaton with a search loop
//! tuned for it.
//!
//! `aho_corasick`'s DFA is general: its byte classes keep upper and lower
//! case apart (about twice the alphabet), every transition is bounds
//! checked and its match test compares each state against a limit. Walked
//! in four interleaved stripes, those extra instructions and the registers
//! they need pushed the four states onto the stack, putting a store and a
//! reload on every byte's dependency chain. [`KeywordDfa`] is built from
//! that DFA (so its states, and the order of the keywords each one
//! reports, are the same) with one class per case-folded byte, a
//! fixed-size table indexed under a mask (no bounds check) and the match
//! flag in each state's number (the rows of matching states in the upper
//! half of the table), so that one test covers all stripes.
//! The four-stripe loop only notes where a stripe matched (the byte index
//! and the four states, in a small buffer) and goes on; the keywords are
//! recorded outside it, so that it carries little besides the stripes,
//! their states and the two tables.

use aho_corasick::Anchored;
use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use std::collections::{HashMap, HashSet};

/// Set in the states that report keywords: their rows fill the upper half
/// of the table, the other states' rows its lower half, so that one test of
/// the states of all stripes tells whether any of them reports a keyword.
const MATCH: u32 = (TABLE / 2) as u32;
/// Independent slices of a buffer searched in one interleaved loop: the
/// table lookup's latency, not the machine's throughput, bounds a single
/// walk, so several interleaved walks run faster than one.
pub(crate) const STRIPES: usize = 4;
/// Buffers shorter than this are searched as one stripe.
pub(crate) const MIN_STRIPED: usize = 64 << 10;
/// Entries of the transition table: a power of two, so that an index
/// masked with `TABLE - 1` needs no bounds check. Only the rows in use are
/// written (the rest stay untouched zero pages); automata with more rows
/// fall back to the `aho_corasick` DFA. The built-in rules use about a
/// tenth of it.
const TABLE: usize = 1 << 20;

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
    /// The stripes of a buffer of `len` bytes; empties the `out` vectors
    /// of the stripes used.
    pub(crate) fn new(len: usize, reach: usize, out: &mut Vec<Vec<(usize, u32)>>) -> Stripes {
        let k = if len < MIN_STRIPED { 1 } else { STRIPES };
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

/// Most stops noted by one [`KeywordDfa::walk4`] call.
const STOPS: usize = 64;

/// Where the stripes of a [`KeywordDfa::walk4`] call were in states that
/// report keywords: the index of the byte after which they were, and the
/// states of all stripes there.
struct Stops {
    len: usize,
    at: [usize; STOPS],
    states: [[u32; STRIPES]; STOPS],
}

/// The keyword automaton in the form [`KeywordDfa::hits`] walks.
pub(crate) struct KeywordDfa {
    /// Byte to its class; ASCII letters of both cases share a class.
    classes: [u8; 256],
    /// The number of classes: the length of a state's row.
    stride: usize,
    /// `trans[state + classes[byte]]`: the next state, the offset of its
    /// row, at or above [`MATCH`] if it reports keywords.
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
            .field("stride", &self.stride)
            .field("reporting_states", &self.matches.len())
            .finish_non_exhaustive()
    }
}

impl KeywordDfa {
    /// Copies `dfa`, an ASCII-case-insensitive automaton over `keywords`
    /// built without a prefilter. None if it does not fit the table.
    pub(crate) fn new(dfa: &DFA, keywords: &[String]) -> Option<KeywordDfa> {
        // One class per case-folded byte found in a keyword, plus class 0
        // for every other byte: all of those lead every state to the same
        // place (no keyword continues with them).
        let mut classes = [0u8; 256];
        let mut reps = vec![None];
        for k in keywords {
            for b in k.bytes().map(|b| b.to_ascii_lowercase()) {
                if classes[usize::from(b)] == 0 {
                    let class = u8::try_from(reps.len()).ok()?;
                    classes[usize::from(b)] = class;
                    classes[usize::from(b.to_ascii_uppercase())] = class;
                    reps.push(Some(b));
                }
            }
        }
        let other = (0..=255u8).find(|&b| classes[usize::from(b)] == 0);
        reps[0] = other;
        let stride = reps.len();
        let start = dfa.start_state(Anchored::No).ok()?;
        // States numbered in breadth-first order from the start.
        let mut seen: HashSet<StateID> = HashSet::from([start]);
        let mut order = vec![start];
        let mut next = 0;
        while next < order.len() {
            let state = order[next];
            next += 1;
            for &rep in reps.iter().flatten() {
                let to = dfa.next_state(Anchored::No, state, rep);
                if seen.insert(to) {
                    order.push(to);
                }
            }
        }
        // Rows in that order, those of states that report keywords from
        // MATCH on, the others from 0.
        let (reporting, other): (Vec<StateID>, Vec<StateID>) =
            order.iter().partition(|&&s| dfa.is_match(s));
        let half = TABLE / 2;
        if reporting.len().checked_mul(stride)? > half || other.len().checked_mul(stride)? > half {
            return None;
        }
        let mut id: HashMap<StateID, u32> = HashMap::with_capacity(order.len());
        for (i, &s) in other.iter().enumerate() {
            id.insert(s, (i * stride) as u32);
        }
        for (i, &s) in reporting.iter().enumerate() {
            id.insert(s, MATCH + (i * stride) as u32);
        }
        let mut trans: Box<[u32; TABLE]> = vec![0u32; TABLE].into_boxed_slice().try_into().ok()?;
        for &state in &order {
            let row = id[&state] as usize;
            for (class, rep) in reps.iter().enumerate() {
                // With no byte outside the keywords, class 0 is never used.
                let to = rep.map_or(start, |b| dfa.next_state(Anchored::No, state, b));
                trans[row + class] = id[&to];
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
            classes,
            stride,
            trans,
            start: id[&start],
            matches,
            patterns,
        })
    }

    /// The state after `state` reads `byte`. The mask changes nothing (a
    /// state's row lies within the table) but spares the bounds check.
    #[inline(always)]
    fn step(classes: &[u8; 256], trans: &[u32; TABLE], state: u32, byte: u8) -> u32 {
        let class = usize::from(classes[usize::from(byte)]);
        trans[(state as usize + class) & (TABLE - 1)]
    }

    /// Walks four stripes of equal length in step from `states`, noting in
    /// `stops` every byte index after which one of them is in a state that
    /// reports keywords, with the four states there. Returns the number of
    /// bytes walked: all of them, or fewer once `stops` is full. `states`
    /// holds the states reached.
    #[inline(never)]
    fn walk4(
        &self,
        lanes: [&[u8]; STRIPES],
        states: &mut [u32; STRIPES],
        stops: &mut Stops,
    ) -> usize {
        let (classes, trans) = (&self.classes, &*self.trans);
        let [a, b, c, d] = lanes;
        let [mut s0, mut s1, mut s2, mut s3] = *states;
        let mut walked = a.len();
        stops.len = 0;
        // Zipped slices give one index and no bounds checks; the four
        // states advance before the one branch, so the four dependency
        // chains overlap. A stop is noted without leaving the loop (hits
        // of common keywords come every few hundred bytes).
        for (i, (((&x0, &x1), &x2), &x3)) in a.iter().zip(b).zip(c).zip(d).enumerate() {
            s0 = Self::step(classes, trans, s0, x0);
            s1 = Self::step(classes, trans, s1, x1);
            s2 = Self::step(classes, trans, s2, x2);
            s3 = Self::step(classes, trans, s3, x3);
            if (s0 | s1 | s2 | s3) & MATCH != 0 {
                let n = stops.len;
                stops.at[n] = i;
                stops.states[n] = [s0, s1, s2, s3];
                stops.len = n + 1;
                if n + 1 == STOPS {
                    walked = i + 1;
                    break;
                }
            }
        }
        *states = [s0, s1, s2, s3];
        walked
    }

    /// Records the keywords `state` reports (it is in that state after
    /// reading `hay[at]`) if the stripe owns position `at`.
    #[inline(always)]
    fn record(&self, state: u32, at: usize, owned: usize, out: &mut Vec<(usize, u32)>) {
        if state & MATCH != 0 && at >= owned {
            let (from, to) = self.matches[(state - MATCH) as usize / self.stride];
            for &p in &self.patterns[from as usize..to as usize] {
                out.push((at + 1, p));
            }
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
        let Stripes { k, owned, pos, end } = Stripes::new(hay.len(), reach, stripes);
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
                let walked = self.walk4(lanes, &mut state, &mut stops);
                for (&i, stop) in stops.at.iter().zip(&stops.states).take(stops.len) {
                    for j in 0..k {
                        self.record(stop[j], pos[j] + done + i, owned[j], &mut stripes[j]);
                    }
                }
                done += walked;
            }
        }
        let (classes, trans) = (&self.classes, &*self.trans);
        for j in 0..k {
            for (at, &byte) in hay.iter().enumerate().take(end[j]).skip(pos[j] + done) {
                state[j] = Self::step(classes, trans, state[j], byte);
                self.record(state[j], at, owned[j], &mut stripes[j]);
            }
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
            let compact = KeywordDfa::new(&dfa, &keywords).unwrap();
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
