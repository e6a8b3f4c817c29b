//! Property tests for cAST split/merge sizing on generated Rust and Python code
//! and on arbitrary text.

mod common;

use proptest::prelude::*;

/// A random Rust-like file: functions with nested blocks and statements.
fn rust_source() -> impl Strategy<Value = String> {
    let stmt = prop_oneof![
        "[a-z]{1,8}".prop_map(|v| format!("let {v} = {v}_x + 1;")),
        "[a-z]{1,6}".prop_map(|v| format!("{v}(1, \"s\");")),
        Just("// a comment".to_string()),
    ];
    let block = prop::collection::vec(stmt, 0..12).prop_recursive(4, 64, 6, |inner| {
        prop::collection::vec(inner, 1..4).prop_map(|bs| {
            bs.into_iter()
                .map(|b| format!("if x {{\n{}\n}}", b.join("\n")))
                .collect()
        })
    });
    prop::collection::vec(("[a-z]{1,10}", block, any::<bool>()), 1..8).prop_map(|fns| {
        fns.into_iter()
            .map(|(name, body, doc)| {
                let doc = if doc {
                    format!("/// Does {name}.\n")
                } else {
                    String::new()
                };
                format!(
                    "{doc}pub fn {name}(x: bool) -> u32 {{\n{}\n    0\n}}\n\n",
                    body.join("\n")
                )
            })
            .collect()
    })
}

fn python_source() -> impl Strategy<Value = String> {
    let stmt = prop_oneof![
        "[a-z]{1,8}".prop_map(|v| format!("{v} = {v} + 1")),
        "[a-z]{1,6}".prop_map(|v| format!("{v}(1, 's')")),
    ];
    prop::collection::vec(
        (
            "[a-z]{1,10}",
            prop::collection::vec(stmt, 1..15),
            any::<bool>(),
        ),
        1..6,
    )
    .prop_map(|fns| {
        let mut s = String::from("class C:\n");
        for (name, body, doc) in fns {
            s.push_str(&format!("    def {name}(self, x):\n"));
            if doc {
                s.push_str(&format!("        \"\"\"Does {name}.\"\"\"\n"));
            }
            for b in body {
                s.push_str(&format!("        {b}\n"));
            }
            s.push('\n');
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn rust_invariants(src in rust_source(), max in 1usize..600) {
        let m = common::miner(max);
        common::check_cover(&m, "gen.rs", &src, max);
        common::check_units(&m, "gen.rs", &src, max);
    }

    #[test]
    fn python_invariants(src in python_source(), max in 1usize..600) {
        let m = common::miner(max);
        common::check_cover(&m, "gen.py", &src, max);
        common::check_units(&m, "gen.py", &src, max);
    }

    #[test]
    fn arbitrary_text_never_panics_and_rejoins(src in "\\PC{0,400}", max in 1usize..100) {
        let m = common::miner(max);
        for path in ["x.rs", "x.py"] {
            let chunks = m.cover_text(path, &src).expect("cover");
            let joined: String = chunks.iter().map(|c| c.text.as_str()).collect();
            prop_assert_eq!(&joined, &src);
            prop_assert!(chunks.iter().all(|c| c.text.chars().count() <= max));
            m.mine_text(path, &src).expect("mine");
        }
    }
}
