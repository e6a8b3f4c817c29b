//! The OpenAI wire format (the subset Forge serves) and Forge's extensions.
//!
//! Requests ignore fields they do not use (OpenAI clients send many);
//! fields they use are checked with messages that name the field.

use serde::{Deserialize, Serialize};

use crate::prompt::Citation;

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// Message content: a string or a list of parts (`{"type":"text","text":…}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Part {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Message {
    pub(crate) role: String,
    #[serde(default)]
    pub(crate) content: Option<Content>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: bool,
}

/// Sampling fields shared by every endpoint.
#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct Common {
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) max_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) temperature: Option<f32>,
    #[serde(default)]
    pub(crate) top_p: Option<f32>,
    #[serde(default)]
    pub(crate) n: Option<u64>,
    #[serde(default)]
    pub(crate) seed: Option<u64>,
    #[serde(default)]
    pub(crate) stop: Option<Stop>,
    #[serde(default)]
    pub(crate) stream: bool,
    #[serde(default)]
    pub(crate) stream_options: Option<StreamOptions>,
    /// Forge: keep generating past eos (llama.cpp and vLLM accept it too).
    #[serde(default)]
    pub(crate) ignore_eos: bool,
    /// Forge: retrieval on/off for this request (default: on for chat and
    /// FIM when the server has a repository, off for completions).
    #[serde(default)]
    pub(crate) retrieval: Option<bool>,
    /// Forge: documents to retrieve (default: the server's `top_k`).
    #[serde(default)]
    pub(crate) retrieval_top_k: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChatRequest {
    #[serde(flatten)]
    pub(crate) common: Common,
    pub(crate) messages: Vec<Message>,
}

/// `prompt`: a string or a list with one string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum PromptField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CompletionRequest {
    #[serde(flatten)]
    pub(crate) common: Common,
    pub(crate) prompt: PromptField,
    #[serde(default)]
    pub(crate) suffix: Option<String>,
    #[serde(default)]
    pub(crate) echo: bool,
}

/// Forge's fill-in-the-middle request (`POST /v1/fim/completions`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FimRequest {
    #[serde(flatten)]
    pub(crate) common: Common,
    /// The current file, relative to the repository root.
    #[serde(default)]
    pub(crate) path: Option<String>,
    pub(crate) prefix: String,
    #[serde(default)]
    pub(crate) suffix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: usize,
    pub(crate) completion_tokens: usize,
    pub(crate) total_tokens: usize,
}

impl Usage {
    pub(crate) fn new(prompt: usize, completion: usize) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }
}

/// The error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorDetail {
    pub(crate) message: String,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) param: Option<String>,
    pub(crate) code: &'static str,
}

/// Citations as they appear in responses.
pub(crate) type Citations = Vec<Citation>;
