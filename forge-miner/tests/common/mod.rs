//! Invariant checks shared by the snapshot, property and bad-input tests.
#![allow(dead_code, unreachable_pub)]

use forge_miner::{Budget, Miner};

/// Every named node of `text`'s tree: (start, end).
pub fn nodes(lang: tree_sitter::Language, text: &str) -> Vec<(usize, usize)> {
    let mut parser = tree_sitter::Parser::new();
    parser.set_language(&lang).expect("grammar");
    let tree = parser.parse(text, None).expect("tree");
    let mut out = Vec::new();
    let mut cursor = tree.walk();
    // Iterative pre-order walk.
    loop {
        let n = cursor.node();
        if n.is_named() {
            out.push((n.start_byte(), n.end_byte()));
        }
        if cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return out;
            }
        }
    }
}

pub fn grammar(path: &str) -> tree_sitter::Language {
    if path.ends_with(".py") || !path.contains('.') {
        tree_sitter_python::LANGUAGE.into()
    } else {
        tree_sitter_rust::LANGUAGE.into()
    }
}

/// Cover mode: chunks tile the file, each fits, and every node that fits the
/// budget lies inside one chunk (it was never cut).
pub fn check_cover(miner: &Miner, path: &str, text: &str, max: usize) {
    let chunks = miner.cover_text(path, text).expect("cover");
    let joined: String = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        joined, text,
        "{path}: cover chunks do not re-join to the file"
    );
    let mut pos = 0;
    for c in &chunks {
        assert_eq!(c.start_byte, pos, "{path}: chunks not contiguous");
        pos = c.end_byte;
        assert!(
            c.text.chars().count() <= max,
            "{path}: chunk of {} chars over budget {max}",
            c.text.chars().count()
        );
    }
    for (a, b) in nodes(grammar(path), text) {
        let fits = text[a..b].chars().count() <= max;
        if fits && a < b {
            assert!(
                chunks.iter().any(|c| c.start_byte <= a && b <= c.end_byte),
                "{path}: node {a}..{b} fits the budget {max} but was cut"
            );
        }
    }
    let again = miner.cover_text(path, text).expect("cover");
    assert_eq!(chunks, again, "{path}: cover is not deterministic");
}

/// Units mode: units that fit are whole, parts of a split unit tile its range
/// and fit, text matches the source.
pub fn check_units(miner: &Miner, path: &str, text: &str, max: usize) {
    let file = miner.mine_text(path, text).expect("mine");
    let units = &file.units;
    let mut i = 0;
    while i < units.len() {
        let u = &units[i];
        assert_eq!(&text[u.start_byte..u.end_byte], u.text, "{path}: unit text");
        match u.part {
            None => {
                assert!(
                    u.text.chars().count() <= max,
                    "{path}: whole unit {} over budget",
                    u.symbol
                );
                i += 1;
            }
            Some(p) => {
                assert_eq!(p.index, 0, "{path}: parts out of order");
                let parts = &units[i..i + p.count];
                let whole = &text[parts[0].start_byte..parts[p.count - 1].end_byte];
                assert!(
                    whole.chars().count() > max,
                    "{path}: unit {} fits the budget but was split",
                    u.symbol
                );
                for w in parts.windows(2) {
                    assert_eq!(
                        w[0].end_byte, w[1].start_byte,
                        "{path}: parts not contiguous"
                    );
                }
                for q in parts {
                    assert_eq!(q.symbol, u.symbol);
                    assert!(q.text.chars().count() <= max, "{path}: part over budget");
                }
                i += p.count;
            }
        }
    }
    let again = miner.mine_text(path, text).expect("mine");
    assert_eq!(file.units, again.units, "{path}: units not deterministic");
}

pub fn miner(max: usize) -> Miner {
    Miner::new(".").with_budget(Budget::chars(max))
}
