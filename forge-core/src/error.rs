//! The facade's error type: every sub-crate's error, converted.

/// Errors from any Forge stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the MLX layer.
    #[error(transparent)]
    Mlx(#[from] forge_mlx::Error),
    /// From repository mining.
    #[error(transparent)]
    Miner(#[from] forge_miner::Error),
    /// From the model.
    #[error(transparent)]
    Model(#[from] forge_model::Error),
    /// From adapters or training.
    #[error(transparent)]
    Peft(#[from] forge_peft::Error),
    /// From quantization.
    #[error(transparent)]
    Quant(#[from] forge_quant::Error),
    /// From evaluation.
    #[error(transparent)]
    Judge(#[from] forge_judge::Error),
    /// From GGUF reading, writing or export.
    #[error(transparent)]
    Gguf(#[from] forge_gguf::Error),
    /// A smoke check of the MLX build failed.
    #[error("mlx smoke check failed: {0}")]
    SmokeFailed(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
