//! Repository reconstruction on a small git repository built in the test: held-out units from
//! the most recent commit (forge-miner's incremental mining), scoring invariants, and (feature
//! `model`) greedy generation with a tiny seeded random model.
#![cfg(feature = "miner")]

use std::path::Path;
use std::process::Command;

use forge_judge::{HeldOutUnit, cut_body, held_out_since, normalize_body, score_units};

fn git(dir: &Path, args: &[&str]) -> bool {
    Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

const OLD_RS: &str = "/// Adds.\npub fn add(a: u32, b: u32) -> u32 {\n    a + b\n}\n";
const NEW_RS: &str = "/// Adds.\npub fn add(a: u32, b: u32) -> u32 {\n    a.wrapping_add(b)\n}\n\n/// Scales every value by `k`.\npub fn scale(xs: &mut [f32], k: f32) {\n    for x in xs.iter_mut() {\n        *x *= k;\n    }\n}\n";
const NEW_PY: &str = "def mean(xs):\n    \"\"\"Arithmetic mean of xs.\"\"\"\n    total = 0.0\n    for x in xs:\n        total += x\n    return total / len(xs)\n\n\nclass Box:\n    def area(self, w, h):\n        \"\"\"Area.\"\"\"\n        a = w * h\n        return a\n";

/// A repository with two commits: the second changes `src/lib.rs` and adds `pkg/stats.py`;
/// `src/untouched.rs` only exists in the first.
fn repo() -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    std::fs::create_dir_all(d.join("src")).expect("mkdir");
    std::fs::create_dir_all(d.join("pkg")).expect("mkdir");
    if !git(d, &["init", "-q"]) {
        eprintln!("skipped: git CLI not available");
        return None;
    }
    std::fs::write(d.join("src/lib.rs"), OLD_RS).expect("write");
    std::fs::write(
        d.join("src/untouched.rs"),
        "pub fn old(x: i64) -> i64 {\n    x * 2 + 1\n}\n",
    )
    .expect("write");
    assert!(git(d, &["add", "."]));
    assert!(git(d, &["commit", "-q", "-m", "one"]));
    std::fs::write(d.join("src/lib.rs"), NEW_RS).expect("write");
    std::fs::write(d.join("pkg/stats.py"), NEW_PY).expect("write");
    assert!(git(d, &["add", "."]));
    assert!(git(d, &["commit", "-q", "-m", "two"]));
    Some(dir)
}

fn held_out(dir: &Path) -> Vec<HeldOutUnit> {
    held_out_since(dir, "HEAD~1").expect("held out")
}

#[test]
fn held_out_units_are_the_recent_changes() {
    let Some(dir) = repo() else { return };
    let units = held_out(dir.path());
    let names: Vec<(&str, &str)> = units
        .iter()
        .map(|u| (u.path.as_str(), u.symbol.as_str()))
        .collect();
    assert!(
        names.iter().all(|(p, _)| *p != "src/untouched.rs"),
        "{names:?}"
    );
    assert_eq!(units.len(), 4, "{names:?}");
    for u in &units {
        // prompt + body is a prefix of the file's text: nothing of the body leaks into the
        // prompt, nothing of the prompt is lost.
        let file = std::fs::read_to_string(dir.path().join(&u.path)).expect("read");
        assert!(file.contains(&format!("{}{}", u.prompt, u.body)), "{u:?}");
        assert!(!u.prompt.contains(u.body.trim()), "{u:?}");
    }
    let mean = units
        .iter()
        .find(|u| u.symbol.ends_with("mean"))
        .expect("mean");
    assert!(mean.prompt.contains("\"\"\"Arithmetic mean of xs.\"\"\""));
    assert!(mean.prompt.ends_with("\"\"\"") && mean.body.starts_with("\n    total = 0.0"));
    let scale = units
        .iter()
        .find(|u| u.symbol.ends_with("scale"))
        .expect("scale");
    assert!(scale.prompt.starts_with("/// Scales"));
    assert!(scale.body.starts_with(" {") && scale.body.ends_with('}'));
    assert!(scale.prompt.ends_with("k: f32)"));
    // The original body cut as if generated (followed by more code) is the body itself.
    for u in &units {
        let tail = if u.lang == forge_judge::Lang::Rust {
            "\nfn next() {}\n"
        } else {
            "\ndef next():\n    pass\n"
        };
        assert_eq!(
            normalize_body(&cut_body(u.lang, &u.prompt, &format!("{}{tail}", u.body))),
            normalize_body(&u.body),
            "{}",
            u.symbol
        );
    }
}

#[test]
fn scoring_invariants() {
    let Some(dir) = repo() else { return };
    let units = held_out(dir.path());
    // Perfect reconstruction (trailing whitespace and blank lines do not count).
    let perfect: Vec<String> = units
        .iter()
        .map(|u| format!("\n{}  \n\n", u.body))
        .collect();
    let r = score_units(&units, &perfect).expect("score");
    assert_eq!(r.exact_match, 1.0);
    assert_eq!(r.edit_similarity, 1.0);
    for (s, u) in r.units.iter().zip(&units) {
        assert_eq!(s.codebleu.syntax_match, 1.0, "{}", s.symbol);
        if u.body.split_whitespace().count() >= 4 {
            assert!(
                (s.codebleu.codebleu - 1.0).abs() < 1e-12,
                "{}: {:?}",
                s.symbol,
                s.codebleu
            );
        } else {
            // BLEU-4 of fewer than 4 tokens stays below 1 even for identical text.
            assert!(s.codebleu.ngram_match < 1.0, "{}", s.symbol);
        }
    }
    // Damaged reconstructions: one character off, a wrong body, an empty body.
    let damaged: Vec<String> = units
        .iter()
        .enumerate()
        .map(|(i, u)| match i % 3 {
            0 => u.body.replacen('x', "y", 1),
            1 => "pass".to_string(),
            _ => String::new(),
        })
        .collect();
    let r = score_units(&units, &damaged).expect("score");
    for (s, u) in r.units.iter().zip(&units) {
        assert!(!s.exact_match, "{}", s.symbol);
        assert!((0.0..1.0).contains(&s.edit_similarity), "{}", s.symbol);
        assert!((0.0..=1.0).contains(&s.codebleu.codebleu), "{}", s.symbol);
        if s.generated.is_empty() {
            assert_eq!(s.edit_similarity, 0.0);
        }
        if s.generated.len() == u.body.len() {
            // One substitution: similarity 1 − 1/len.
            let n = normalize_body(&u.body).chars().count() as f64;
            assert!((s.edit_similarity - (1.0 - 1.0 / n)).abs() < 1e-12);
        }
    }
    let n = r.units.len() as f64;
    let mean = r.units.iter().map(|s| s.edit_similarity).sum::<f64>() / n;
    assert!((r.edit_similarity - mean).abs() < 1e-15);
    assert!(score_units(&units, &damaged[1..]).is_err());
    let results = r.to_results("damaged");
    assert_eq!(results.tasks.len(), units.len());
    assert_eq!(results.metrics["exact_match"], 0.0);
}

#[cfg(feature = "model")]
#[test]
fn tiny_model_generation_is_deterministic_and_well_formed() {
    use forge_judge::{ReconstructOptions, generate_bodies, load_for_eval};
    use forge_model::{Architecture, random_model, tiny_config, write_hf_dir};

    let Some(dir) = repo() else { return };
    let units = held_out(dir.path());
    let model_dir = dir.path().join("model");
    write_hf_dir(
        &random_model(tiny_config(Architecture::Llama), 7).expect("model"),
        &model_dir,
    )
    .expect("hf dir");
    let (m, tok) = load_for_eval(model_dir.to_str().expect("utf8"), None).expect("load");
    let mut model = m.into_model().expect("model");
    let opts = ReconstructOptions {
        max_tokens: 24,
        seed: 0,
    };
    let mut calls = 0;
    let a = generate_bodies(&mut model, &tok, &units, &opts, &mut |_, _| calls += 1).expect("gen");
    let b = generate_bodies(&mut model, &tok, &units, &opts, &mut |_, _| {}).expect("gen");
    assert_eq!(calls, units.len());
    assert_eq!(a, b, "greedy generation is deterministic");
    for (u, g) in units.iter().zip(&a) {
        // Already cut: cutting again changes nothing.
        assert_eq!(&cut_body(u.lang, &u.prompt, g), g);
    }
    let r = score_units(&units, &a).expect("score");
    for s in &r.units {
        assert!((0.0..=1.0).contains(&s.edit_similarity));
        assert!(!s.exact_match || s.edit_similarity == 1.0);
    }
}
