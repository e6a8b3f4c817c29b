//! `forge generate`: stream text or print next-token probabilities.

use std::io::Write;

use forge_core::gguf;

#[derive(clap::Args)]
pub(crate) struct GenerateArgs {
    /// A GGUF file, a Hugging Face folder, or `default` (SmolLM2-135M-Instruct)
    #[arg(long, default_value = "default")]
    pub(crate) model: String,
    /// The prompt (with --chat: the user message)
    #[arg(long)]
    pub(crate) prompt: String,
    /// Tokens to generate (0: none, e.g. with --top-logprobs)
    #[arg(long, default_value_t = 256)]
    pub(crate) max_tokens: usize,
    /// Sampling temperature (0: greedy)
    #[arg(long, default_value_t = 0.0)]
    pub(crate) temperature: f32,
    /// Keep the K most probable tokens (0: off)
    #[arg(long, default_value_t = 0)]
    pub(crate) top_k: usize,
    /// Nucleus sampling mass (1: off)
    #[arg(long, default_value_t = 1.0)]
    pub(crate) top_p: f32,
    /// Sampling seed
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Wrap the prompt as a user message in the model's chat template
    #[arg(long)]
    pub(crate) chat: bool,
    /// Print the K most probable next tokens after the prompt
    #[arg(long)]
    pub(crate) top_logprobs: Option<usize>,
    /// Print JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
    /// auto | mlx | cpu. `cpu` runs a GGUF file's quantized weights as stored
    /// (llama.cpp's arithmetic); `mlx` the MLX model. `auto`: `cpu` for GGUF
    /// sources when MLX computes on the CPU, else `mlx`.
    #[arg(long, default_value = "auto")]
    pub(crate) backend: String,
}

pub(crate) fn run(args: GenerateArgs) -> forge_core::Result<()> {
    use forge_core::model::{
        self as m, ChatMessage, GenerateOptions, Generator, LoadOptions, ModelSource,
    };
    let source = ModelSource::parse(&args.model);
    let use_cpu = match args.backend.as_str() {
        "cpu" => true,
        "mlx" => false,
        "auto" => !matches!(source, ModelSource::HfDir(_)) && !forge_core::mlx::runtime_info().gpu,
        other => {
            return Err(m::Error::InvalidOption {
                name: "backend",
                found: format!("{other:?}"),
                expected: "auto, mlx or cpu",
            }
            .into());
        }
    };
    let mut mlx_model;
    let mut cpu_model;
    let tokenizer;
    let mut generator = if use_cpu {
        let (model, tok) = m::load_cpu(&source)?;
        cpu_model = model;
        tokenizer = tok;
        Generator::new(&mut cpu_model, &tokenizer)
    } else {
        let mut loaded = m::load(&source, &LoadOptions::new())?;
        tokenizer = loaded.tokenizer.take().ok_or_else(|| {
            m::Error::Unsupported(format!("{}: the model has no tokenizer", args.model))
        })?;
        mlx_model = loaded.model;
        Generator::new(&mut mlx_model, &tokenizer)
    };
    let ids = if args.chat {
        generator.chat_prompt_ids(&[ChatMessage::new("user", args.prompt.as_str())])?
    } else {
        tokenizer.encode(&args.prompt, true)?
    };
    let mut out = std::io::stdout().lock();
    let mut emit = |text: &str| -> forge_core::Result<()> {
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(forge_core::Error::from(gguf::Error::Write(e)))
            }
            _ => Ok(()),
        }
    };
    if let Some(k) = args.top_logprobs {
        let top = generator.next_token_top_k(&ids, k)?;
        if args.json {
            let doc = serde_json::json!({
                "model": args.model,
                "prompt_tokens": ids.len(),
                "top_logprobs": top,
            });
            emit(&format!("{doc}\n"))?;
        } else {
            for t in &top {
                emit(&format!("{:>8}  {:.6}  {:?}\n", t.id, t.prob, t.text))?;
            }
        }
    }
    if args.max_tokens == 0 {
        return Ok(());
    }
    let options = GenerateOptions::new()
        .with_max_tokens(args.max_tokens)
        .with_temperature(args.temperature)
        .with_top_k(args.top_k)
        .with_top_p(args.top_p)
        .with_seed(args.seed);
    let mut stream = generator.stream_ids(&ids, &options)?;
    let mut text = String::new();
    for delta in stream.by_ref() {
        let delta = delta?;
        if args.json {
            text.push_str(&delta);
        } else {
            emit(&delta)?;
        }
    }
    if args.json {
        let doc = serde_json::json!({
            "model": args.model,
            "text": text,
            "tokens": stream.tokens(),
            "finish_reason": format!("{:?}", stream.finish_reason()),
        });
        emit(&format!("{doc}\n"))?;
    } else {
        emit("\n")?;
    }
    Ok(())
}
