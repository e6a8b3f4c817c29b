//! Ollama `Modelfile`s for an exported GGUF.
//!
//! Ollama renders prompts with Go templates, not the Jinja chat template in
//! the GGUF, so the `TEMPLATE` is written per chat format: ChatML
//! (`<|im_start|>role\n…<|im_end|>`, SmolLM2 and Qwen2) and Llama 3
//! (`<|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>`). The `SYSTEM`
//! prompt is the template's own default system message when it has one;
//! `stop` parameters are the turn-end and eos tokens.

use crate::{Error, Result};

use super::tokenizer::TokenizerSpec;

/// Settings of a Modelfile.
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaOptions {
    /// `PARAMETER temperature`.
    pub temperature: f32,
    /// `PARAMETER top_k`.
    pub top_k: u32,
    /// `SYSTEM`; `None` takes the chat template's default system message.
    pub system: Option<String>,
}

impl Default for OllamaOptions {
    fn default() -> Self {
        Self {
            temperature: 0.2,
            top_k: 40,
            system: None,
        }
    }
}

const CHATML: &str = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\
{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}\
<|im_start|>assistant\n{{ .Response }}<|im_end|>\n";

const LLAMA3: &str = "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}\
{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}\
<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>";

/// The default system message a ChatML Jinja template writes when the
/// conversation has none (`'<|im_start|>system\nYou are …<|im_end|>\n'`).
fn chatml_default_system(template: &str) -> Option<String> {
    let start = template.find("<|im_start|>system\n")? + "<|im_start|>system\n".len();
    let end = start + template[start..].find("<|im_end|>")?;
    let text = &template[start..end];
    // A literal message, not a Jinja expression.
    (!text.contains("{{") && !text.contains("{%") && !text.is_empty()).then(|| text.to_string())
}

fn quote(s: &str) -> String {
    format!("\"\"\"{s}\"\"\"")
}

/// The Modelfile for `gguf_path` with `tokenizer`'s chat format.
pub fn ollama_modelfile(
    gguf_path: &str,
    tokenizer: &TokenizerSpec,
    options: &OllamaOptions,
) -> Result<String> {
    let template = tokenizer.chat_template.as_deref().unwrap_or("");
    let (go_template, turn_end, default_system) = if template.contains("<|im_start|>") {
        (CHATML, "<|im_end|>", chatml_default_system(template))
    } else if template.contains("<|start_header_id|>") {
        (LLAMA3, "<|eot_id|>", None)
    } else {
        return Err(Error::Export(
            "no Ollama template for this chat template (known: ChatML, Llama 3)".into(),
        ));
    };
    let mut stops: Vec<&str> = vec![turn_end];
    for t in tokenizer.stop_tokens() {
        if !stops.contains(&t) {
            stops.push(t);
        }
    }
    let mut out = format!("FROM {gguf_path}\n\nTEMPLATE {}\n", quote(go_template));
    if let Some(system) = options.system.clone().or(default_system) {
        out.push_str(&format!("\nSYSTEM {}\n", quote(&system)));
    }
    out.push('\n');
    out.push_str(&format!("PARAMETER temperature {}\n", options.temperature));
    out.push_str(&format!("PARAMETER top_k {}\n", options.top_k));
    for s in stops {
        out.push_str(&format!("PARAMETER stop \"{s}\"\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tokenizer::VocabModel;

    fn spec(template: &str) -> TokenizerSpec {
        TokenizerSpec {
            model: VocabModel::Gpt2 {
                merges: vec!["a b".into()],
                pre: "smollm".into(),
            },
            tokens: vec![
                "<|endoftext|>".into(),
                "<|im_start|>".into(),
                "<|im_end|>".into(),
            ],
            token_types: vec![3, 3, 3],
            bos: Some(1),
            eos: Some(2),
            eot: None,
            unk: Some(0),
            pad: Some(2),
            add_bos: Some(false),
            add_eos: None,
            add_space_prefix: Some(false),
            chat_template: Some(template.into()),
        }
    }

    #[test]
    fn chatml_modelfile() {
        let tpl = "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}";
        let m = ollama_modelfile("./model.gguf", &spec(tpl), &OllamaOptions::default())
            .expect("modelfile");
        assert!(m.starts_with("FROM ./model.gguf\n"));
        assert!(m.contains("TEMPLATE \"\"\"{{ if .System }}<|im_start|>system\n"));
        assert!(m.contains("SYSTEM \"\"\"You are a helpful AI assistant named SmolLM, trained by Hugging Face\"\"\""));
        assert!(m.contains("PARAMETER temperature 0.2\n"));
        assert!(m.contains("PARAMETER top_k 40\n"));
        assert_eq!(m.matches("PARAMETER stop").count(), 1, "{m}");
        assert!(m.contains("PARAMETER stop \"<|im_end|>\"\n"));
        let mut other = spec("{{ bos_token }}{{ messages }}");
        assert!(ollama_modelfile("m.gguf", &other, &OllamaOptions::default()).is_err());
        other.chat_template = Some("<|start_header_id|>".into());
        let m = ollama_modelfile("m.gguf", &other, &OllamaOptions::default()).expect("llama3");
        assert!(m.contains("<|eot_id|>") && !m.contains("SYSTEM"));
    }
}
