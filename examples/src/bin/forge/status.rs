//! `forge status`: the active model, the registry, the deployment log, the runs.

#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    /// The project: a folder with forge.toml, or the file
    #[arg(default_value = ".")]
    pub(crate) project: std::path::PathBuf,
    /// Print JSON
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run(args: StatusArgs) -> anyhow::Result<()> {
    let status = forge_core::Forge::open(&args.project)?.status()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{status}");
    }
    Ok(())
}
