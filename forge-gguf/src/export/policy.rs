//! Quantization policies: which GGML type each tensor of an export gets.
//!
//! The mixtures follow llama.cpp's `llama_tensor_get_type`
//! (`src/llama-quant.cpp` of the llama.cpp vendored by
//! `llama-cpp-python==0.3.36`), restated here for the file types Forge
//! writes:
//!
//! - only 2-D tensors whose name ends in `weight` and is not a `*_norm.weight`
//!   are quantized; everything else (norms, biases, 1-D tensors) stays F32;
//! - `Q4_K_M` / `Q5_K_M` start from `Q4_K` / `Q5_K`, then
//!   - `output.weight` (and `token_embd.weight` when the embeddings are tied,
//!     i.e. there is no `output.weight`) becomes `Q6_K`, or `Q8_0` when its
//!     row length is not a multiple of 256;
//!   - `attn_v.weight` and `ffn_down.weight` become `Q6_K` on the
//!     "use more bits" layers `i < n/8 ∨ i ≥ 7n/8 ∨ (i − n/8) mod 3 = 2`;
//! - `--pure` skips the mixture: every quantizable tensor gets the base type;
//! - a row length that is not a multiple of the block size falls back
//!   `Q4_K → Q5_0`, `Q5_K → Q5_1`, `Q6_K → Q8_0`, and to `F16` when even the
//!   fallback does not fit.

use std::fmt;
use std::str::FromStr;

use forge_quant::GgmlType;

use crate::Error;

/// The file types Forge exports (`general.file_type`, llama.cpp's
/// `llama_ftype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(non_camel_case_types)]
pub enum FileType {
    /// Every tensor F32 (`LLAMA_FTYPE_ALL_F32` = 0).
    F32,
    /// Matrices F16, 1-D tensors F32 (`MOSTLY_F16` = 1).
    F16,
    /// Matrices BF16, 1-D tensors F32 (`MOSTLY_BF16` = 32).
    BF16,
    /// Matrices Q8_0 (`MOSTLY_Q8_0` = 7).
    Q8_0,
    /// The Q4_K_M mixture (`MOSTLY_Q4_K_M` = 15).
    Q4_K_M,
    /// The Q5_K_M mixture (`MOSTLY_Q5_K_M` = 17).
    Q5_K_M,
}

impl FileType {
    /// Every file type, in the order the CLI lists them.
    pub const ALL: &'static [FileType] = &[
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q4_K_M,
        FileType::Q5_K_M,
    ];

    /// `general.file_type` (llama.cpp's `llama_ftype` value).
    pub const fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 7,
            Self::Q4_K_M => 15,
            Self::Q5_K_M => 17,
            Self::BF16 => 32,
        }
    }

    /// The type of the quantizable matrices before the mixture rules.
    pub const fn base_type(self) -> GgmlType {
        match self {
            Self::F32 => GgmlType::F32,
            Self::F16 => GgmlType::F16,
            Self::BF16 => GgmlType::BF16,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q4_K_M => GgmlType::Q4_K,
            Self::Q5_K_M => GgmlType::Q5_K,
        }
    }

    /// The lower-case name (`q4_k_m`), as `--type` takes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::Q8_0 => "q8_0",
            Self::Q4_K_M => "q4_k_m",
            Self::Q5_K_M => "q5_k_m",
        }
    }

    /// The upper-case name llama.cpp prints (`Q4_K_M`).
    pub fn display_name(self) -> String {
        self.as_str().to_ascii_uppercase()
    }

    fn is_k_mixture(self) -> bool {
        matches!(self, Self::Q4_K_M | Self::Q5_K_M)
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FileType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
                Error::Export(format!(
                    "unknown export type `{s}` (expected one of {})",
                    names.join(", ")
                ))
            })
    }
}

/// A file type plus the `--pure` switch: the rule that picks each tensor's
/// GGML type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    file_type: FileType,
    pure: bool,
    n_layers: usize,
    tied_embeddings: bool,
}

/// What the policy needs to know about one tensor.
#[derive(Debug, Clone, Copy)]
pub struct TensorRole<'a> {
    /// GGUF name (`blk.3.ffn_down.weight`).
    pub name: &'a str,
    /// GGUF shape (row length first).
    pub shape: &'a [u64],
}

impl Policy {
    /// The policy of `file_type` for a model of `n_layers` blocks;
    /// `tied_embeddings` when the file has no `output.weight`.
    pub fn new(file_type: FileType, n_layers: usize, tied_embeddings: bool) -> Self {
        Self {
            file_type,
            pure: false,
            n_layers,
            tied_embeddings,
        }
    }

    /// `--pure`: no mixture, every quantizable tensor gets the base type.
    #[must_use]
    pub fn with_pure(mut self, pure: bool) -> Self {
        self.pure = pure;
        self
    }

    /// The file type.
    pub fn file_type(&self) -> FileType {
        self.file_type
    }

    /// Whether `--pure` is set.
    pub fn is_pure(&self) -> bool {
        self.pure
    }

    /// The GGML type of tensor `t`.
    pub fn tensor_type(&self, t: TensorRole<'_>) -> GgmlType {
        if !quantizable(t) {
            return GgmlType::F32;
        }
        let base = self.file_type.base_type();
        let mut ty = base;
        if self.file_type.is_k_mixture() && !self.pure {
            ty = self.mixture(t, base);
        }
        if is_quantized(base) {
            ty = fallback(ty, t.shape[0]);
        } else if !(t.shape[0] as usize).is_multiple_of(ty.block_size()) {
            ty = GgmlType::F32;
        }
        ty
    }

    fn mixture(&self, t: TensorRole<'_>, base: GgmlType) -> GgmlType {
        let ncols = t.shape[0];
        let is_output =
            t.name == "output.weight" || (self.tied_embeddings && t.name == "token_embd.weight");
        if is_output {
            return if !ncols.is_multiple_of(256) {
                GgmlType::Q8_0
            } else {
                GgmlType::Q6_K
            };
        }
        if let Some(layer) = layer_of(t.name) {
            let bump = (t.name.ends_with(".attn_v.weight") || t.name.ends_with(".ffn_down.weight"))
                && use_more_bits(layer, self.n_layers);
            if bump {
                return GgmlType::Q6_K;
            }
        }
        base
    }
}

/// llama.cpp's `use_more_bits(i, n)`: the first and last eighth of the
/// layers and every third layer in between.
pub fn use_more_bits(layer: usize, n_layers: usize) -> bool {
    let (i, n) = (layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

fn is_quantized(ty: GgmlType) -> bool {
    !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Whether llama.cpp quantizes a tensor at all (`tensor_allows_quantization`
/// for the tensors of llama/qwen2/mistral).
fn quantizable(t: TensorRole<'_>) -> bool {
    t.shape.len() >= 2 && t.name.ends_with("weight") && !t.name.ends_with("_norm.weight")
}

fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// llama.cpp's `tensor_type_fallback` for a row of `ncols` values.
fn fallback(ty: GgmlType, ncols: u64) -> GgmlType {
    let fits = |t: GgmlType| ncols.is_multiple_of(t.block_size() as u64);
    if fits(ty) {
        return ty;
    }
    let next = match ty {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    };
    if fits(next) { next } else { GgmlType::F16 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(p: &Policy, name: &str, shape: &[u64]) -> GgmlType {
        p.tensor_type(TensorRole { name, shape })
    }

    #[test]
    fn use_more_bits_matches_llama_cpp_for_30_layers() {
        // n/8 = 3, 7n/8 = 26: layers 0-2, 26-29 and 5, 8, ..., 23.
        let more: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(
            more,
            vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
        );
    }

    #[test]
    fn q4_k_m_mixture_on_a_256_multiple_model() {
        let p = Policy::new(FileType::Q4_K_M, 32, false);
        assert_eq!(ty(&p, "output.weight", &[4096, 32000]), GgmlType::Q6_K);
        assert_eq!(ty(&p, "token_embd.weight", &[4096, 32000]), GgmlType::Q4_K);
        assert_eq!(ty(&p, "blk.0.attn_v.weight", &[4096, 1024]), GgmlType::Q6_K);
        assert_eq!(ty(&p, "blk.4.attn_v.weight", &[4096, 1024]), GgmlType::Q4_K);
        assert_eq!(
            ty(&p, "blk.6.ffn_down.weight", &[11008, 4096]),
            GgmlType::Q6_K
        );
        assert_eq!(
            ty(&p, "blk.7.ffn_down.weight", &[11008, 4096]),
            GgmlType::Q4_K
        );
        assert_eq!(ty(&p, "blk.7.attn_q.weight", &[4096, 4096]), GgmlType::Q4_K);
        assert_eq!(ty(&p, "blk.7.attn_norm.weight", &[4096]), GgmlType::F32);
        assert_eq!(ty(&p, "blk.7.attn_q.bias", &[4096]), GgmlType::F32);
        let pure = p.with_pure(true);
        assert_eq!(ty(&pure, "output.weight", &[4096, 32000]), GgmlType::Q4_K);
        assert_eq!(
            ty(&pure, "blk.0.attn_v.weight", &[4096, 1024]),
            GgmlType::Q4_K
        );
        let q5 = Policy::new(FileType::Q5_K_M, 32, true);
        assert_eq!(ty(&q5, "token_embd.weight", &[4096, 32000]), GgmlType::Q6_K);
        assert_eq!(
            ty(&q5, "blk.31.ffn_down.weight", &[11008, 4096]),
            GgmlType::Q6_K
        );
        assert_eq!(
            ty(&q5, "blk.9.ffn_up.weight", &[4096, 11008]),
            GgmlType::Q5_K
        );
    }

    #[test]
    fn fallbacks_when_rows_are_not_256_multiples() {
        // SmolLM2-135M: hidden 576 = 2.25 * 256, ffn 1536 = 6 * 256, tied.
        let p = Policy::new(FileType::Q4_K_M, 30, true);
        assert_eq!(ty(&p, "token_embd.weight", &[576, 49152]), GgmlType::Q8_0);
        assert_eq!(ty(&p, "blk.1.attn_q.weight", &[576, 576]), GgmlType::Q5_0);
        assert_eq!(ty(&p, "blk.1.attn_v.weight", &[576, 192]), GgmlType::Q8_0);
        assert_eq!(ty(&p, "blk.3.attn_v.weight", &[576, 192]), GgmlType::Q5_0);
        assert_eq!(
            ty(&p, "blk.1.ffn_down.weight", &[1536, 576]),
            GgmlType::Q6_K
        );
        assert_eq!(
            ty(&p, "blk.3.ffn_down.weight", &[1536, 576]),
            GgmlType::Q4_K
        );
        let q5 = Policy::new(FileType::Q5_K_M, 30, true);
        assert_eq!(ty(&q5, "blk.3.attn_q.weight", &[576, 576]), GgmlType::Q5_1);
        // Not even a multiple of 32: F16.
        assert_eq!(ty(&p, "blk.3.attn_q.weight", &[100, 64]), GgmlType::F16);
        let q8 = Policy::new(FileType::Q8_0, 30, true);
        assert_eq!(ty(&q8, "token_embd.weight", &[576, 49152]), GgmlType::Q8_0);
        assert_eq!(ty(&q8, "blk.0.attn_q.weight", &[100, 64]), GgmlType::F16);
    }

    #[test]
    fn float_types_keep_1d_tensors_f32() {
        for (ft, want) in [
            (FileType::F32, GgmlType::F32),
            (FileType::F16, GgmlType::F16),
            (FileType::BF16, GgmlType::BF16),
        ] {
            let p = Policy::new(ft, 2, true);
            assert_eq!(ty(&p, "token_embd.weight", &[576, 49152]), want);
            assert_eq!(ty(&p, "output_norm.weight", &[576]), GgmlType::F32);
        }
    }

    #[test]
    fn file_type_names_and_ids() {
        for ft in FileType::ALL {
            assert_eq!(ft.as_str().parse::<FileType>().ok(), Some(*ft));
        }
        assert_eq!("Q4_K_M".parse::<FileType>().ok(), Some(FileType::Q4_K_M));
        assert!("q3_k_s".parse::<FileType>().is_err());
        assert_eq!(FileType::Q4_K_M.id(), 15);
        assert_eq!(FileType::BF16.id(), 32);
    }
}
