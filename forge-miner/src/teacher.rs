//! The teacher writes RAFT questions and answers from a unit's facts.
//!
//! The default [`TemplateTeacher`] needs no model: it fills templates with what
//! extraction found (name, symbol, path, lines, signature, doc). A local model
//! (forge-model generation) can implement [`Teacher`] later for richer questions.

use crate::unit::{Unit, UnitKind};

/// A question about a unit, with the verbatim quote that supports its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qa {
    /// Which template (or teacher) produced it.
    pub template: String,
    /// The question.
    pub question: String,
    /// Text copied verbatim from the unit (checked by the RAFT builder).
    pub quote: String,
    /// The reasoning sentence that introduces the quote.
    pub reasoning: String,
    /// The final answer.
    pub answer: String,
}

/// Writes questions and answers about units.
pub trait Teacher: Send + Sync {
    /// A short name recorded in the dataset card.
    fn name(&self) -> &str;
    /// Every question the teacher can ask about `unit` (the RAFT builder picks
    /// among them with its seeded generator). `separator` is the language's
    /// symbol separator (`::`, `.`).
    fn questions(&self, unit: &Unit, separator: &str) -> Vec<Qa>;
}

/// Template questions over extracted facts: "what does X do", "where is X
/// defined", "how is X called", "which function `<doc phrase>`".
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplateTeacher;

/// The first line of `text` whose trimmed content contains `needle`, trimmed.
fn quote_line(text: &str, needle: &str) -> Option<String> {
    let needle = needle.trim();
    if needle.is_empty() {
        return None;
    }
    text.lines()
        .map(str::trim)
        .find(|l| l.contains(needle))
        .map(str::to_string)
}

/// The first sentence of a doc (up to the first ". " or the first blank line).
fn first_sentence(doc: &str) -> String {
    let para = doc.split("\n\n").next().unwrap_or(doc).replace('\n', " ");
    let s = match para.find(". ") {
        Some(i) => &para[..=i],
        None => para.as_str(),
    };
    s.trim().to_string()
}

impl Teacher for TemplateTeacher {
    fn name(&self) -> &str {
        "template"
    }

    fn questions(&self, u: &Unit, sep: &str) -> Vec<Qa> {
        let mut out = Vec::new();
        let kind = u.kind.as_str().replace('_', " ");
        let sig_line = u.signature.lines().next().unwrap_or("").trim().to_string();
        let sig_quote = quote_line(&u.text, &sig_line);
        let doc_line = u
            .doc
            .as_deref()
            .and_then(|d| d.lines().find(|l| !l.trim().is_empty()))
            .map(str::trim)
            .unwrap_or("");
        let doc_quote = quote_line(&u.text, doc_line);
        let lines = format!("lines {}-{}", u.start_line, u.end_line);

        if let (Some(doc), Some(q)) = (u.doc.as_deref(), doc_quote.clone()) {
            let verb = if u.kind.is_callable() {
                "do"
            } else {
                "represent"
            };
            out.push(Qa {
                template: "what_does".into(),
                question: format!("What does `{}` {verb}?", u.name),
                reasoning: format!(
                    "The question asks about `{}`. The document from `{}` defines the {kind} `{}`, and its documentation says",
                    u.name, u.path, u.symbol
                ),
                quote: q,
                answer: format!("`{}`: {}", u.symbol, first_sentence(doc)),
            });
        }
        if let Some(q) = sig_quote.clone() {
            out.push(Qa {
                template: "where_defined".into(),
                question: format!("Where is `{}` defined?", u.name),
                reasoning: format!(
                    "The question asks where `{}` is defined. The document from `{}` ({lines}) contains its definition:",
                    u.name, u.path
                ),
                quote: q,
                answer: format!(
                    "`{}` is a {kind} defined in `{}`, {lines}.",
                    u.symbol, u.path
                ),
            });
        }
        if u.kind.is_callable()
            && let Some(q) = sig_quote
        {
            let args = u.params.join(", ");
            let call = if u.receiver {
                let recv = if sep == "::" { "value" } else { "obj" };
                format!("{recv}.{}({args})", u.name)
            } else if u.kind == UnitKind::Method {
                let owner = u
                    .symbol
                    .rsplit(sep)
                    .nth(1)
                    .unwrap_or("")
                    .trim_start_matches('<')
                    .split(" as ")
                    .next()
                    .unwrap_or("");
                format!("{owner}{sep}{}({args})", u.name)
            } else {
                format!("{}({args})", u.name)
            };
            let one_line = u.signature.split_whitespace().collect::<Vec<_>>().join(" ");
            out.push(Qa {
                template: "how_called".into(),
                question: format!("How is `{}` called?", u.name),
                reasoning: format!(
                    "To call `{}` we need its parameters. Its signature in `{}` is",
                    u.name, u.path
                ),
                quote: q,
                answer: format!("Call it as `{call}`; its signature is `{one_line}`."),
            });
        }
        if u.kind.is_callable()
            && let (Some(doc), Some(q)) = (u.doc.as_deref(), doc_quote)
        {
            let sentence = first_sentence(doc);
            let mut words = sentence.split_whitespace();
            let verb = words.next().unwrap_or("");
            let third_person = verb.len() > 2
                && verb.ends_with('s')
                && !verb.ends_with("ss")
                && verb.chars().next().is_some_and(char::is_uppercase);
            if third_person && sentence.split_whitespace().count() >= 3 {
                let phrase = sentence.trim_end_matches('.');
                let mut chars = phrase.chars();
                let lowered: String = chars
                    .next()
                    .map(|c| c.to_lowercase().chain(chars).collect())
                    .unwrap_or_default();
                out.push(Qa {
                    template: "which_function".into(),
                    question: format!("Which function {lowered}?"),
                    reasoning: format!(
                        "We need the function whose documentation matches. In `{}`, `{}` is documented as",
                        u.path, u.symbol
                    ),
                    quote: q,
                    answer: format!("`{}` in `{}`.", u.symbol, u.path),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sentences() {
        assert_eq!(first_sentence("Parses a header. More."), "Parses a header.");
        assert_eq!(
            first_sentence("One line\nwrapped.\n\nSecond"),
            "One line wrapped."
        );
    }
}
