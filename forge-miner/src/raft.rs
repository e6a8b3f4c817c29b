//! RAFT: Retrieval-Augmented Fine-Tuning.
//!
//! Zhang et al., "RAFT: Adapting Language Model to Domain Specific RAG",
//! arXiv:2403.10131 (2024), §3. Each example is a question `Q`, a set of
//! documents and a chain-of-thought answer `A*`:
//!
//! ```text
//! P     of the data:  Q + D* + D_1 … D_k      → A*     (oracle kept)
//! 1 − P of the data:  Q + D_1 … D_{k+1}       → A*     (oracle dropped)
//! ```
//!
//! with `P = 0.8` and `k = 4` by default. The oracle `D*` is the unit the
//! question was written from; the distractors `D_i` are the `k` (or `k + 1`)
//! best BM25 matches (see [`crate::bm25`]) for the question plus the unit's
//! name and signature among the other units — hard negatives that look
//! relevant. The document order is shuffled. `A*` quotes the oracle verbatim
//! between `##begin_quote##` and `##end_quote##` and ends with `##Answer:`, as
//! in the paper; the answer is the same when the oracle is dropped, which
//! teaches the model to answer from what it learned of the codebase. Every
//! choice comes from a generator seeded with the seed and the unit id.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::bm25::{Bm25, tokenize};
use crate::dataset::{DatasetConfig, Record, Task};
use crate::rng::SplitMix64;
use crate::tasks::record;
use crate::teacher::Teacher;
use crate::unit::{Unit, UnitKind};

/// Start of a verbatim quote in a RAFT answer.
pub const BEGIN_QUOTE: &str = "##begin_quote##";
/// End of a verbatim quote in a RAFT answer.
pub const END_QUOTE: &str = "##end_quote##";

/// The RAFT instruction (the user turn starts with it).
pub const INSTRUCTION: &str = "Answer the question about this codebase using the documents below; some of them may be irrelevant. Reason step by step, quote the code you rely on verbatim between ##begin_quote## and ##end_quote##, and end with ##Answer: followed by the answer.";

/// Units that can be questioned and retrieved: whole, named, non-container definitions.
pub fn eligible(u: &Unit) -> bool {
    u.part.is_none()
        && !u.name.is_empty()
        && !matches!(
            u.kind,
            UnitKind::ModuleDoc | UnitKind::Chunk | UnitKind::Impl | UnitKind::Module
        )
}

/// One unit as a RAFT context document:
/// `<DOCUMENT path="…" lines="a-b">text</DOCUMENT>`.
pub fn document(u: &Unit) -> String {
    format!(
        "<DOCUMENT path=\"{}\" lines=\"{}-{}\">\n{}\n</DOCUMENT>",
        u.path,
        u.start_line,
        u.end_line,
        u.text.trim_end()
    )
}

/// RAFT records for `units` (all are retrieval candidates; questions are asked
/// about the eligible ones).
pub(crate) fn build(
    units: &[&Unit],
    cfg: &DatasetConfig,
    teacher: &dyn Teacher,
    separator: &(dyn Fn(&str) -> &'static str + Sync),
) -> Vec<Record> {
    let corpus: Vec<&Unit> = units.iter().copied().filter(|u| eligible(u)).collect();
    let docs: Vec<Vec<String>> = corpus
        .par_iter()
        .map(|u| tokenize(&format!("{} {}", u.symbol, u.text)))
        .collect();
    let index = Bm25::new(&docs);
    let k = cfg.raft.distractors;
    corpus
        .par_iter()
        .enumerate()
        .flat_map_iter(|(i, u)| {
            let mut rng = SplitMix64::for_key(cfg.seed, &format!("raft:{}", u.id));
            let mut qas = teacher.questions(u, separator(&u.language));
            qas.retain(|q| !q.quote.is_empty() && u.text.contains(&q.quote));
            rng.shuffle(&mut qas);
            qas.truncate(cfg.raft.questions_per_unit);
            let mut out = Vec::new();
            for qa in qas {
                let keep_oracle = rng.next_f64() < cfg.raft.p_oracle;
                let n_distractors = if keep_oracle { k } else { k + 1 };
                let query = tokenize(&format!("{} {} {}", qa.question, u.name, u.signature));
                let hits = index.search(&query, n_distractors, |d| {
                    d == i || corpus[d].symbol == u.symbol || corpus[d].hash == u.hash
                });
                let mut docs: Vec<&Unit> = hits.iter().map(|&(d, _)| corpus[d]).collect();
                if keep_oracle {
                    docs.push(u);
                }
                rng.shuffle(&mut docs);
                let input = input(&docs, &qa.question);
                let output = format!(
                    "##Reason: {} {BEGIN_QUOTE}{}{END_QUOTE} Therefore, {}\n##Answer: {}",
                    qa.reasoning,
                    qa.quote,
                    lower_first(&qa.answer),
                    qa.answer
                );
                let mut r = record(
                    Task::Raft,
                    u,
                    &qa.template,
                    cfg,
                    INSTRUCTION.to_string(),
                    input,
                    output,
                );
                let mut meta = BTreeMap::new();
                meta.insert("template".into(), qa.template.clone());
                meta.insert("question".into(), qa.question.clone());
                meta.insert("oracle".into(), u.id.clone());
                meta.insert("oracle_in_context".into(), keep_oracle.to_string());
                meta.insert(
                    "distractors".into(),
                    hits.iter()
                        .map(|&(d, _)| corpus[d].id.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                );
                meta.insert("teacher".into(), teacher.name().to_string());
                r.meta = meta;
                out.push(r);
            }
            out
        })
        .collect()
}

/// The RAFT input: the documents, a blank line between each, then
/// `Question: …`. The user turn is [`INSTRUCTION`], a blank line, and this.
pub fn input(docs: &[&Unit], question: &str) -> String {
    let context: Vec<String> = docs.iter().map(|d| document(d)).collect();
    format!("{}\n\nQuestion: {}", context.join("\n\n"), question)
}

fn lower_first(s: &str) -> String {
    // Keep code spans (`Foo`) as they are.
    if s.starts_with('`') {
        return s.to_string();
    }
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}
