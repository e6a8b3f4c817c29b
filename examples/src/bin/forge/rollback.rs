//! `forge rollback`: make an earlier model active again.

#[derive(clap::Args)]
pub(crate) struct RollbackArgs {
    /// The project: a folder with forge.toml, or the file
    #[arg(default_value = ".")]
    pub(crate) project: std::path::PathBuf,
    /// The registry id of the model to activate (default: the one active before the current)
    #[arg(long)]
    pub(crate) to: Option<i64>,
    /// Print JSON
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run(args: RollbackArgs) -> anyhow::Result<()> {
    let (model, note) = forge_core::Forge::open(&args.project)?.rollback(args.to)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"active": model, "note": note}))?
        );
    } else {
        println!(
            "active model: {} (run {}, {})",
            model.id,
            model.run_id,
            model.gguf_path.display()
        );
        if !note.is_empty() {
            println!("{note}");
        }
    }
    Ok(())
}
