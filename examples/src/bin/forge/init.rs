//! `forge init`: write a commented default forge.toml.

#[derive(clap::Args)]
pub(crate) struct InitArgs {
    /// The project folder (the repository to learn from, usually)
    #[arg(default_value = ".")]
    pub(crate) dir: std::path::PathBuf,
    /// Replace an existing forge.toml
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) fn run(args: InitArgs) -> forge_core::Result<()> {
    let path = forge_core::Forge::init(&args.dir, args.force)?;
    println!("wrote {}", path.display());
    println!("edit it, then: forge run {}", args.dir.display());
    Ok(())
}
