//! The crate's error type.

/// Errors from Forge's MLX layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// MLX raised an exception.
    #[error("mlx: {0}")]
    Mlx(#[from] mlx_rs::error::Exception),
    /// A device was asked for that this process cannot use.
    #[error("device: {0}")]
    Device(String),
    /// An array could not be read back to the host.
    #[error("reading array `{name}` to the host: {source}")]
    Readback {
        /// Which array.
        name: &'static str,
        /// Why.
        #[source]
        source: mlx_rs::error::AsSliceError,
    },
    /// An array had another shape than the operation needs.
    #[error("array `{name}` has shape {found:?}, expected {expected}")]
    Shape {
        /// Which array.
        name: &'static str,
        /// The shape it has.
        found: Vec<i32>,
        /// What was expected, in words.
        expected: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
