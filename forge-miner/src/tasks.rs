//! Task builders: completion, fill-in-the-middle, explain and doc → code.

use std::collections::BTreeMap;

use crate::dataset::{DatasetConfig, Record, RecordSource, Task};
use crate::hash::{fnv1a_fields, hex};
use crate::rng::SplitMix64;
use crate::unit::{Unit, UnitKind};

pub(crate) fn source(u: &Unit) -> RecordSource {
    RecordSource {
        path: u.path.clone(),
        symbol: u.symbol.clone(),
        language: u.language.clone(),
        start_line: u.start_line,
        end_line: u.end_line,
    }
}

pub(crate) fn record(
    task: Task,
    u: &Unit,
    variant: &str,
    cfg: &DatasetConfig,
    instruction: String,
    input: String,
    output: String,
) -> Record {
    Record {
        id: hex(fnv1a_fields(&[
            task.as_str().as_bytes(),
            u.id.as_bytes(),
            variant.as_bytes(),
        ])),
        task,
        system: cfg.system.clone(),
        instruction,
        input,
        output,
        raw: false,
        source: source(u),
        meta: BTreeMap::new(),
    }
}

fn fence(lang: &str, code: &str) -> String {
    format!("```{lang}\n{}\n```", code.trim_end())
}

fn kind_words(k: UnitKind) -> String {
    k.as_str().replace('_', " ")
}

/// The non-RAFT records of one unit.
pub(crate) fn unit_records(u: &Unit, cfg: &DatasetConfig) -> Vec<Record> {
    let mut out = Vec::new();
    let whole = u.part.is_none();
    let lang = u.language.as_str();
    let kind = kind_words(u.kind);

    if cfg.tasks.contains(Task::Completion)
        && whole
        && u.kind.is_callable()
        && let (Some(body), Some((b0, _))) = (u.body_text(), u.body)
        && body.trim().len() >= 16
        && let Some(head) = u.text.get(..b0.saturating_sub(u.start_byte))
    {
        out.push(record(
            Task::Completion,
            u,
            "",
            cfg,
            format!(
                "Complete the body of the {lang} {kind} `{}` from `{}`.",
                u.symbol, u.path
            ),
            fence(lang, head),
            body.to_string(),
        ));
    }

    if cfg.tasks.contains(Task::Fim) && !u.kind.is_container() && u.kind != UnitKind::ModuleDoc {
        let lines: Vec<&str> = u.text.split_inclusive('\n').collect();
        let n = lines.len();
        if n >= 4 {
            let mut rng = SplitMix64::for_key(cfg.seed, &format!("fim:{}", u.id));
            let start = 1 + rng.below(n - 2);
            let max_len = (n - 1 - start).max(1).min((n / 3).max(1));
            let len = 1 + rng.below(max_len);
            let prefix: String = lines[..start].concat();
            let middle: String = lines[start..start + len].concat();
            let suffix: String = lines[start + len..].concat();
            if !middle.trim().is_empty() {
                let f = &cfg.fim;
                let mut r = record(
                    Task::Fim,
                    u,
                    "",
                    cfg,
                    format!("{}{prefix}{}{suffix}{}", f.prefix, f.suffix, f.middle),
                    String::new(),
                    middle,
                );
                r.raw = true;
                r.system = None;
                out.push(r);
            }
        }
    }

    let doc = u.doc.as_deref().filter(|d| d.trim().len() >= 20);
    if cfg.tasks.contains(Task::Explain)
        && whole
        && u.kind != UnitKind::ModuleDoc
        && let Some(doc) = doc
    {
        out.push(record(
            Task::Explain,
            u,
            "",
            cfg,
            format!(
                "Write the documentation for the {lang} {kind} `{}` in `{}`.",
                u.name, u.path
            ),
            fence(lang, &u.code_without_doc()),
            doc.to_string(),
        ));
    }

    if cfg.tasks.contains(Task::DocToCode)
        && whole
        && u.kind.is_callable()
        && let Some(doc) = doc
    {
        let mut instruction = format!(
            "Implement the {lang} {kind} `{}` in `{}`, documented as:\n\n{doc}\n\nSignature: `{}`",
            u.symbol,
            u.path,
            u.signature.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        if !u.imports.is_empty() {
            instruction.push_str("\n\nIn scope:\n");
            instruction.push_str(&fence(lang, &u.imports.join("\n")));
        }
        out.push(record(
            Task::DocToCode,
            u,
            "",
            cfg,
            instruction,
            String::new(),
            u.code_without_doc(),
        ));
    }
    out
}
