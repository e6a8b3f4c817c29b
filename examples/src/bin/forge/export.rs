//! `forge export`: a model (optionally with adapters fused) to a llama.cpp
//! GGUF file, a LoRA adapter GGUF, and an Ollama Modelfile.

use std::path::PathBuf;
use std::process::Command;

use forge_core::export::{self, ExportOptions};
use forge_core::gguf::export::{ExportProgress, ExportReport, FileType, OllamaOptions};
use forge_core::model::ModelSource;

#[derive(clap::Args)]
pub(crate) struct ExportArgs {
    /// A GGUF file, a Hugging Face folder, or `default` (SmolLM2-135M-Instruct)
    #[arg(long, default_value = "default")]
    pub(crate) model: String,
    /// Adapters (PEFT or mlx-lm layout) to fuse into the model
    #[arg(long)]
    pub(crate) adapter: Option<PathBuf>,
    /// Write the adapter alone as a llama.cpp LoRA GGUF (needs --adapter; --type f32|f16|bf16)
    #[arg(long)]
    pub(crate) lora: bool,
    /// f32, f16, bf16, q8_0, q4_k_m or q5_k_m
    #[arg(long = "type", default_value = "q4_k_m")]
    pub(crate) file_type: String,
    /// One type for every matrix (no Q4_K_M/Q5_K_M mixture)
    #[arg(long)]
    pub(crate) pure: bool,
    /// The GGUF file to write
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Also write an Ollama Modelfile beside the GGUF (and run `ollama create` when ollama is installed)
    #[arg(long)]
    pub(crate) modelfile: bool,
    /// The Ollama model name for `ollama create`
    #[arg(long, default_value = "forge-model")]
    pub(crate) ollama_name: String,
}

fn bar(total_hint: u64) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(total_hint).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tensors {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    )
}

fn summary(report: &ExportReport, out: &std::path::Path) {
    println!(
        "wrote {} ({}): {} tensors, {:.1} MiB, {:.1} M parameters, {:.3} bits/weight, {:.2} s",
        out.display(),
        report.file_type.display_name(),
        report.tensors,
        report.file_bytes as f64 / (1 << 20) as f64,
        report.elements as f64 / 1e6,
        report.bits_per_weight(),
        report.seconds
    );
    for (ty, n) in &report.type_counts {
        println!("  {ty:>5}: {n} tensors");
    }
}

pub(crate) fn run(args: ExportArgs) -> forge_core::Result<()> {
    let file_type: FileType = args.file_type.parse()?;
    let source = ModelSource::parse(&args.model);
    if args.lora {
        let dir = args.adapter.as_deref().ok_or_else(|| {
            forge_core::Error::Gguf(forge_core::gguf::Error::Export(
                "--lora writes an adapter: pass --adapter DIR".into(),
            ))
        })?;
        let report = export::export_adapter(&source, dir, file_type, &args.out)?;
        summary(&report, &args.out);
        println!(
            "use it with: llama-cli -m BASE.gguf --lora {}",
            args.out.display()
        );
        return Ok(());
    }
    let mut options = ExportOptions::new(file_type).with_pure(args.pure);
    if let Some(dir) = &args.adapter {
        options = options.with_adapter(dir);
    }
    let pb = bar(0);
    let mut progress = |p: &ExportProgress<'_>| {
        pb.set_length(p.total as u64);
        pb.set_position(p.done as u64);
        pb.set_message(format!("{} {}", p.ggml_type.name(), p.tensor));
    };
    let (report, spec) = export::export(&source, &options, &args.out, &mut progress)?;
    pb.finish_and_clear();
    summary(&report, &args.out);
    if args.modelfile {
        let path = export::write_modelfile(&args.out, &spec.tokenizer, &OllamaOptions::default())?;
        println!("wrote {}", path.display());
        let has_ollama = Command::new("ollama").arg("--version").output().is_ok();
        if has_ollama {
            let status = Command::new("ollama")
                .args(["create", &args.ollama_name, "-f"])
                .arg(&path)
                .status();
            match status {
                Ok(s) if s.success() => println!("ollama: created {}", args.ollama_name),
                Ok(s) => eprintln!("ollama create exited with {s}"),
                Err(e) => eprintln!("ollama create failed: {e}"),
            }
        } else {
            println!(
                "ollama is not installed; run: ollama create {} -f {}",
                args.ollama_name,
                path.display()
            );
        }
    }
    Ok(())
}
