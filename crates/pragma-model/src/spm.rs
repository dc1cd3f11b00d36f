//! SentencePiece vocabularies stored in GGUF (`tokenizer.ggml.model = "llama"`: Gemma,
//! Llama 2, Mistral v0.1), tokenized as llama.cpp does (`llm_tokenizer_spm` in
//! `llama-vocab.cpp`), so ids equal llama.cpp's (tested on Gemma 3 against its output in
//! `fixtures/gemma3/tokenizer.json`):
//!
//! 1. special and user-defined tokens are cut out of the text first, longest first
//!    (control and unknown tokens only when parsing special tokens);
//! 2. in each remaining piece, spaces become `▁` (and a `▁` is prepended when the file
//!    asks for `add_space_prefix`);
//! 3. the piece is split into UTF-8 characters and adjacent symbols are merged, highest
//!    vocabulary score first (ties: leftmost), while the merged text is a token;
//! 4. a symbol that is not a token is re-split along its merges, and characters no token
//!    covers fall back to byte tokens `<0xXX>`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use aho_corasick::AhoCorasick;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const BYTE: i32 = 6;
}

/// A SentencePiece (score-merging) vocabulary.
#[derive(Clone, Debug)]
pub struct Spm {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    to_id: HashMap<String, u32>,
    byte_ids: Vec<Option<u32>>,
    /// Control, user-defined and unknown tokens, longest first (llama.cpp's
    /// `cache_special_tokens`).
    specials: Vec<u32>,
    /// Finds which of `specials` occur in a text at all (overlapping matches), so that
    /// only those are partitioned on.
    finder: Option<AhoCorasick>,
    add_space_prefix: bool,
}

/// A bigram candidate: merging `left` with `right` gives a token of `score`.
#[derive(Debug)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Highest score first, then the leftmost (llama.cpp's `llm_bigram_spm::comparator`).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: usize,
    n: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    /// Build from the GGUF arrays; `types` may be shorter (missing entries are normal).
    pub fn new(
        tokens: Vec<String>,
        scores: Vec<f32>,
        types: Vec<i32>,
        add_space_prefix: bool,
    ) -> Self {
        let mut to_id = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            to_id.insert(t.clone(), i as u32); // the last duplicate wins, as in llama.cpp
        }
        let ty = |i: usize| types.get(i).copied().unwrap_or(token_type::NORMAL);
        let byte_ids = (0..=255u8)
            .map(|b| {
                to_id
                    .get(&format!("<0x{b:02X}>"))
                    .or_else(|| to_id.get(&(b as char).to_string()))
                    .copied()
            })
            .collect();
        let mut specials: Vec<u32> = (0..tokens.len())
            .filter(|&i| {
                matches!(
                    ty(i),
                    token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN
                ) && !tokens[i].is_empty()
            })
            .map(|i| i as u32)
            .collect();
        specials.sort_by(|&a, &b| {
            tokens[b as usize]
                .len()
                .cmp(&tokens[a as usize].len())
                .then(a.cmp(&b))
        });
        let finder = AhoCorasick::new(specials.iter().map(|&i| &tokens[i as usize])).ok();
        let types = (0..tokens.len()).map(ty).collect();
        Self {
            tokens,
            scores,
            types,
            to_id,
            byte_ids,
            specials,
            finder,
            add_space_prefix,
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn token_type(&self, id: u32) -> Option<i32> {
        self.types.get(id as usize).copied()
    }

    /// The vocabulary entry as stored (a space shows as `▁`).
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.to_id.get(token).copied()
    }

    /// Ids of `text` (no BOS). With `parse_special`, control tokens written in the text
    /// become their ids; user-defined tokens always do (as in llama.cpp).
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        let mut first = true;
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(s) => {
                    let mut t = String::with_capacity(s.len() + 3);
                    if self.add_space_prefix && first {
                        t.push(' ');
                    }
                    t.push_str(s);
                    self.encode_piece(&t.replace(' ', "\u{2581}"), &mut out);
                }
            }
            first = false;
        }
        out
    }

    /// Split `text` on special tokens, longest first (llama.cpp's
    /// `tokenizer_st_partition`).
    fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut frags = vec![Fragment::Text(text)];
        let Some(finder) = &self.finder else {
            return frags;
        };
        let mut present: Vec<bool> = vec![false; self.specials.len()];
        let mut any = false;
        for m in finder.find_overlapping_iter(text) {
            present[m.pattern().as_usize()] = true;
            any = true;
        }
        if !any {
            return frags;
        }
        for (k, &id) in self.specials.iter().enumerate() {
            if !present[k] {
                continue;
            }
            let ty = self.types[id as usize];
            if !parse_special && matches!(ty, token_type::CONTROL | token_type::UNKNOWN) {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(mut s) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = s.find(needle) {
                    if at > 0 {
                        next.push(Fragment::Text(&s[..at]));
                    }
                    next.push(Fragment::Token(id));
                    s = &s[at + needle.len()..];
                }
                if !s.is_empty() {
                    next.push(Fragment::Text(s));
                }
            }
            frags = next;
        }
        frags
    }

    /// Score-merge one piece of text (spaces already `▁`) into ids.
    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            let n = c.len_utf8();
            symbols.push(Symbol {
                start,
                n,
                prev: i.checked_sub(1),
                next: (start + n < text.len()).then_some(i + 1),
            });
        }
        let mut queue = BinaryHeap::new();
        // llama.cpp keys this by text; as every merge yields a token, it is consulted only
        // for symbols that never merged (kept for fidelity).
        let mut rev_merge: HashMap<String, (usize, usize)> = HashMap::new();
        let try_add = |left: Option<usize>,
                       right: Option<usize>,
                       symbols: &[Symbol],
                       queue: &mut BinaryHeap<Bigram>,
                       rev_merge: &mut HashMap<String, (usize, usize)>| {
            let (Some(l), Some(r)) = (left, right) else {
                return;
            };
            let start = symbols[l].start;
            let size = symbols[l].n + symbols[r].n;
            let s = &text[start..start + size];
            let Some(&id) = self.to_id.get(s) else {
                return;
            };
            queue.push(Bigram {
                left: l,
                right: r,
                score: self.scores.get(id as usize).copied().unwrap_or(0.0),
                size,
            });
            rev_merge.insert(s.to_string(), (l, r));
        };
        for i in 1..symbols.len() {
            try_add(Some(i - 1), Some(i), &symbols, &mut queue, &mut rev_merge);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            if l.n == 0 || r.n == 0 || l.n + r.n != b.size {
                continue;
            }
            symbols[b.left].n += r.n;
            symbols[b.right].n = 0;
            symbols[b.left].next = r.next;
            if let Some(nx) = r.next {
                symbols[nx].prev = Some(b.left);
            }
            let (prev, next) = (symbols[b.left].prev, symbols[b.left].next);
            try_add(prev, Some(b.left), &symbols, &mut queue, &mut rev_merge);
            try_add(Some(b.left), next, &symbols, &mut queue, &mut rev_merge);
        }
        let mut i = Some(0);
        while let Some(k) = i {
            self.resegment(text, &symbols, k, &rev_merge, out);
            i = symbols[k].next;
        }
    }

    fn resegment(
        &self,
        text: &str,
        symbols: &[Symbol],
        k: usize,
        rev_merge: &HashMap<String, (usize, usize)>,
        out: &mut Vec<u32>,
    ) {
        let sym = symbols[k];
        let s = &text[sym.start..sym.start + sym.n];
        if let Some(&id) = self.to_id.get(s) {
            out.push(id);
            return;
        }
        match rev_merge.get(s) {
            Some(&(l, r)) => {
                self.resegment(text, symbols, l, rev_merge, out);
                self.resegment(text, symbols, r, rev_merge, out);
            }
            None => {
                for b in s.bytes() {
                    if let Some(id) = self.byte_ids[b as usize] {
                        out.push(id);
                    }
                }
            }
        }
    }

    /// The bytes a token prints as: `▁` -> space for normal tokens, the byte of a byte
    /// token, the text of user-defined and (with `special`) control tokens.
    pub fn token_bytes(&self, id: u32, special: bool) -> Vec<u8> {
        let Some(t) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        match self.types[id as usize] {
            token_type::NORMAL => t.replace('\u{2581}', " ").into_bytes(),
            token_type::BYTE => t
                .strip_prefix("<0x")
                .and_then(|h| h.strip_suffix('>'))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map_or_else(|| t.clone().into_bytes(), |b| vec![b]),
            token_type::USER_DEFINED => t.clone().into_bytes(),
            token_type::CONTROL | token_type::UNKNOWN if special => t.clone().into_bytes(),
            _ => Vec::new(),
        }
    }

    /// Ids back to text (invalid UTF-8 replaced); special tokens kept as text.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| self.token_bytes(i, true))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[derive(Clone, Copy, Debug)]
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Spm {
        let mut tokens: Vec<String> = ["<pad>", "<bos>", "<start>", "\n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut types = vec![3, 3, 3, 4];
        let mut scores = vec![0.0; 4];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        for (t, s) in [
            ("▁", -1.0),
            ("a", -2.0),
            ("b", -3.0),
            ("c", -4.0),
            ("ab", -5.0),
            ("bc", -1.5),
            ("▁a", -6.0),
            ("abc", -7.0),
        ] {
            tokens.push(t.into());
            types.push(1);
            scores.push(s);
        }
        Spm::new(tokens, scores, types, false)
    }

    fn ids(spm: &Spm, words: &[&str]) -> Vec<u32> {
        words
            .iter()
            .map(|w| spm.token_to_id(w).expect("in vocab"))
            .collect()
    }

    #[test]
    fn merges_by_score_then_resegments_and_falls_back_to_bytes() {
        let spm = toy();
        // "abc": bc (-1.5) merges before ab (-5); then a+bc = abc is a token.
        assert_eq!(spm.encode("abc", false), ids(&spm, &["abc"]));
        // "ab": only ab.
        assert_eq!(spm.encode("ab", false), ids(&spm, &["ab"]));
        // " ab": ▁a (-6) vs ab (-5): ab first, then ▁+ab is no token.
        assert_eq!(spm.encode(" ab", false), ids(&spm, &["▁", "ab"]));
        // "é" is no token: its two UTF-8 bytes.
        assert_eq!(spm.encode("é", false), ids(&spm, &["<0xC3>", "<0xA9>"]));
        assert_eq!(spm.decode(&spm.encode("a é\nbc", false)), "a é\nbc");
    }

    #[test]
    fn control_tokens_only_when_parsing_special_user_defined_always() {
        let spm = toy();
        let with = spm.encode("<start>a\nb", true);
        assert_eq!(with, ids(&spm, &["<start>", "a", "\n", "b"]));
        let without = spm.encode("<start>a\nb", false);
        assert!(!without.contains(&spm.token_to_id("<start>").expect("start")));
        assert!(without.contains(&spm.token_to_id("\n").expect("newline")));
        assert_eq!(spm.decode(&without), "<start>a\nb");
    }
}
