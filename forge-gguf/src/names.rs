//! Tensor names and layouts between Hugging Face checkpoints and llama.cpp
//! GGUF files, for the decoder families Forge builds (`llama`, `qwen2`,
//! `mistral`).
//!
//! | GGUF (llama.cpp) | Hugging Face |
//! |---|---|
//! | `token_embd.weight` | `model.embed_tokens.weight` |
//! | `output_norm.weight` | `model.norm.weight` |
//! | `output.weight` | `lm_head.weight` |
//! | `blk.{i}.attn_norm.weight` | `model.layers.{i}.input_layernorm.weight` |
//! | `blk.{i}.ffn_norm.weight` | `model.layers.{i}.post_attention_layernorm.weight` |
//! | `blk.{i}.attn_{q,k,v}.{weight,bias}` | `model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}` |
//! | `blk.{i}.attn_output.{weight,bias}` | `model.layers.{i}.self_attn.o_proj.{weight,bias}` |
//! | `blk.{i}.ffn_{gate,up,down}.{weight,bias}` | `model.layers.{i}.mlp.{gate,up,down}_proj.{weight,bias}` |
//!
//! Biases are accepted where the architecture can have them: q/k/v for
//! qwen2; q/k/v/o and the MLP for llama and mistral (`attention_bias`,
//! `mlp_bias`). Anything else is an [`NameError::Unknown`] naming the tensor.
//!
//! Layout: GGUF lists dimensions fastest first (`ne[0]` is the row length),
//! so a GGUF shape is the reverse of the Hugging Face shape and the bytes are
//! the same row-major matrix. llama.cpp's converter additionally permutes the
//! rows of the `q` and `k` projections (weights and biases) of `llama` and
//! `mistral` so that RoPE pairs adjacent features; [`permute_qk_rows`] is that
//! permutation (HF → GGUF) and [`unpermute_qk_rows`] its inverse. `qwen2` is
//! converted without it ([`qk_permuted`]).

use std::fmt;

/// An error of the name mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The architecture has no mapping.
    #[error("architecture `{0}` has no tensor-name mapping (supported: llama, qwen2, mistral)")]
    UnsupportedArchitecture(String),
    /// The tensor name is not part of the architecture's mapping.
    #[error("tensor `{name}` has no {to} name for architecture `{arch}`")]
    Unknown {
        /// The architecture.
        arch: String,
        /// The tensor name that was not recognised.
        name: String,
        /// The naming scheme asked for (`Hugging Face` or `GGUF`).
        to: &'static str,
    },
    /// The rows of a matrix cannot be split into the given heads.
    #[error(
        "cannot (un)permute {rows} rows into {heads} heads: expected a multiple of 2·heads rows and \
         {rows}·{cols} values (found {len})"
    )]
    BadPermuteShape {
        /// Row count.
        rows: usize,
        /// Row length.
        cols: usize,
        /// Head count.
        heads: usize,
        /// Number of values given.
        len: usize,
    },
}

/// A decoder family with a name mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameArch {
    /// `llama` (LLaMA, SmolLM2, TinyLlama).
    Llama,
    /// `qwen2` (Qwen2, Qwen2.5, Qwen2.5-Coder).
    Qwen2,
    /// `mistral`.
    Mistral,
}

impl NameArch {
    /// Parses `general.architecture` / `model_type`.
    pub fn parse(arch: &str) -> Result<Self, NameError> {
        match arch {
            "llama" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            "mistral" => Ok(Self::Mistral),
            other => Err(NameError::UnsupportedArchitecture(other.to_string())),
        }
    }

    /// The architecture string of GGUF and Hugging Face.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Mistral => "mistral",
        }
    }
}

impl fmt::Display for NameArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether llama.cpp's converter permutes the q/k rows of this architecture.
pub fn qk_permuted(arch: NameArch) -> bool {
    matches!(arch, NameArch::Llama | NameArch::Mistral)
}

/// Per-layer pairs `(GGUF stem, HF stem)`, without `.weight` / `.bias`.
const LAYER: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Global pairs (full names).
const GLOBAL: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

fn bias_allowed(arch: NameArch, gguf_stem: &str) -> bool {
    match arch {
        NameArch::Qwen2 => matches!(gguf_stem, "attn_q" | "attn_k" | "attn_v"),
        NameArch::Llama | NameArch::Mistral => !gguf_stem.ends_with("_norm"),
    }
}

fn split_layer<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str, &'a str)> {
    let rest = name.strip_prefix(prefix)?;
    let (index, rest) = rest.split_once('.')?;
    if index.is_empty()
        || !index.bytes().all(|b| b.is_ascii_digit())
        || index.len() > 1 && index.starts_with('0')
    {
        return None;
    }
    let layer: usize = index.parse().ok()?;
    let (stem, kind) = rest.rsplit_once('.')?;
    matches!(kind, "weight" | "bias").then_some((layer, stem, kind))
}

/// The Hugging Face name of the GGUF tensor `name`.
///
/// ```
/// use forge_gguf::{NameArch, gguf_to_hf};
/// assert_eq!(gguf_to_hf(NameArch::Llama, "blk.3.attn_q.weight").unwrap(),
///            "model.layers.3.self_attn.q_proj.weight");
/// ```
pub fn gguf_to_hf(arch: NameArch, name: &str) -> Result<String, NameError> {
    let unknown = || NameError::Unknown {
        arch: arch.to_string(),
        name: name.to_string(),
        to: "Hugging Face",
    };
    if let Some((_, hf)) = GLOBAL.iter().find(|(g, _)| *g == name) {
        return Ok((*hf).to_string());
    }
    let (layer, stem, kind) = split_layer(name, "blk.").ok_or_else(unknown)?;
    let (_, hf) = LAYER.iter().find(|(g, _)| *g == stem).ok_or_else(unknown)?;
    if kind == "bias" && !bias_allowed(arch, stem) {
        return Err(unknown());
    }
    Ok(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The GGUF name of the Hugging Face tensor `name` (the inverse of
/// [`gguf_to_hf`]).
///
/// ```
/// use forge_gguf::{NameArch, hf_to_gguf};
/// assert_eq!(hf_to_gguf(NameArch::Qwen2, "model.layers.0.self_attn.k_proj.bias").unwrap(),
///            "blk.0.attn_k.bias");
/// ```
pub fn hf_to_gguf(arch: NameArch, name: &str) -> Result<String, NameError> {
    let unknown = || NameError::Unknown {
        arch: arch.to_string(),
        name: name.to_string(),
        to: "GGUF",
    };
    if let Some((g, _)) = GLOBAL.iter().find(|(_, h)| *h == name) {
        return Ok((*g).to_string());
    }
    let (layer, stem, kind) = split_layer(name, "model.layers.").ok_or_else(unknown)?;
    let (g, _) = LAYER.iter().find(|(_, h)| *h == stem).ok_or_else(unknown)?;
    if kind == "bias" && !bias_allowed(arch, g) {
        return Err(unknown());
    }
    Ok(format!("blk.{layer}.{g}.{kind}"))
}

/// Which q/k projection a GGUF tensor is, if any: `Some(true)` for
/// `attn_q.*`, `Some(false)` for `attn_k.*`.
pub fn gguf_qk(name: &str) -> Option<bool> {
    let (_, stem, _) = split_layer(name, "blk.")?;
    match stem {
        "attn_q" => Some(true),
        "attn_k" => Some(false),
        _ => None,
    }
}

fn check_permute<T>(data: &[T], rows: usize, cols: usize, heads: usize) -> Result<(), NameError> {
    let ok =
        heads > 0 && rows.is_multiple_of(2 * heads) && rows.checked_mul(cols) == Some(data.len());
    if ok {
        Ok(())
    } else {
        Err(NameError::BadPermuteShape {
            rows,
            cols,
            heads,
            len: data.len(),
        })
    }
}

/// Row `g` of a GGUF q/k matrix holds Hugging Face row `source(g)`.
fn hf_row_of(g: usize, head_dim: usize) -> usize {
    let (h, r) = (g / head_dim, g % head_dim);
    let (i, j) = (r / 2, r % 2);
    h * head_dim + j * (head_dim / 2) + i
}

/// llama.cpp's converter permutation of q/k rows (HF → GGUF): within each of
/// `heads` heads, rows `[first half | second half]` are interleaved so that
/// HF rows `i` and `i + d/2` become GGUF rows `2i` and `2i + 1`. `data` is a
/// row-major `[rows, cols]` matrix (`cols` = 1 for a bias); `heads` is the
/// head count of that projection (the kv head count for `k`).
pub fn permute_qk_rows<T: Copy>(
    data: &[T],
    rows: usize,
    cols: usize,
    heads: usize,
) -> Result<Vec<T>, NameError> {
    check_permute(data, rows, cols, heads)?;
    let head_dim = rows / heads;
    let mut out = Vec::with_capacity(data.len());
    for g in 0..rows {
        let src = hf_row_of(g, head_dim) * cols;
        out.extend_from_slice(&data[src..src + cols]);
    }
    Ok(out)
}

/// The inverse of [`permute_qk_rows`] (GGUF → HF).
pub fn unpermute_qk_rows<T: Copy>(
    data: &[T],
    rows: usize,
    cols: usize,
    heads: usize,
) -> Result<Vec<T>, NameError> {
    check_permute(data, rows, cols, heads)?;
    let head_dim = rows / heads;
    let mut out = data.to_vec();
    for g in 0..rows {
        let dst = hf_row_of(g, head_dim) * cols;
        out[dst..dst + cols].copy_from_slice(&data[g * cols..(g + 1) * cols]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [NameArch; 3] = [NameArch::Llama, NameArch::Qwen2, NameArch::Mistral];

    #[test]
    fn gguf_to_hf_table() {
        let cases = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            (
                "blk.0.attn_norm.weight",
                "model.layers.0.input_layernorm.weight",
            ),
            (
                "blk.12.ffn_norm.weight",
                "model.layers.12.post_attention_layernorm.weight",
            ),
            (
                "blk.1.attn_q.weight",
                "model.layers.1.self_attn.q_proj.weight",
            ),
            (
                "blk.1.attn_k.weight",
                "model.layers.1.self_attn.k_proj.weight",
            ),
            (
                "blk.1.attn_v.weight",
                "model.layers.1.self_attn.v_proj.weight",
            ),
            (
                "blk.29.attn_output.weight",
                "model.layers.29.self_attn.o_proj.weight",
            ),
            (
                "blk.2.ffn_gate.weight",
                "model.layers.2.mlp.gate_proj.weight",
            ),
            ("blk.2.ffn_up.weight", "model.layers.2.mlp.up_proj.weight"),
            (
                "blk.2.ffn_down.weight",
                "model.layers.2.mlp.down_proj.weight",
            ),
        ];
        for arch in ALL {
            for (g, h) in cases {
                assert_eq!(gguf_to_hf(arch, g).unwrap(), h, "{arch} {g}");
                assert_eq!(hf_to_gguf(arch, h).unwrap(), g, "{arch} {h}");
            }
        }
    }

    #[test]
    fn biases_per_architecture() {
        for stem in ["attn_q", "attn_k", "attn_v"] {
            for arch in ALL {
                let g = format!("blk.4.{stem}.bias");
                let h = gguf_to_hf(arch, &g).unwrap();
                assert_eq!(hf_to_gguf(arch, &h).unwrap(), g);
            }
        }
        assert_eq!(
            gguf_to_hf(NameArch::Llama, "blk.0.attn_output.bias").unwrap(),
            "model.layers.0.self_attn.o_proj.bias"
        );
        assert_eq!(
            hf_to_gguf(NameArch::Mistral, "model.layers.0.mlp.up_proj.bias").unwrap(),
            "blk.0.ffn_up.bias"
        );
        for bad in ["blk.0.attn_output.bias", "blk.0.ffn_up.bias"] {
            let e = gguf_to_hf(NameArch::Qwen2, bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(gguf_to_hf(NameArch::Llama, "blk.0.attn_norm.bias").is_err());
    }

    #[test]
    fn unknown_names_are_named() {
        for bad in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.01.attn_q.weight",
            "blk..attn_q.weight",
            "blk.0.attn_qkv.weight",
            "blk.0.attn_q.scale",
            "blk.0",
            "",
        ] {
            let e = gguf_to_hf(NameArch::Llama, bad).unwrap_err();
            assert!(
                matches!(&e, NameError::Unknown { name, .. } if name == bad),
                "{bad}: {e}"
            );
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
        for bad in [
            "model.layers.0.self_attn.rotary_emb.inv_freq",
            "model.embed_tokens",
            "transformer.wte.weight",
        ] {
            let e = hf_to_gguf(NameArch::Qwen2, bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        let e = NameArch::parse("gpt2").unwrap_err();
        assert!(e.to_string().contains("`gpt2`"), "{e}");
        assert_eq!(NameArch::parse("qwen2").unwrap(), NameArch::Qwen2);
    }

    #[test]
    fn permute_matches_llama_cpp_formula() {
        // llama.cpp: w.reshape(heads, 2, rows/heads/2, cols).swapaxes(1, 2).reshape(w.shape)
        let (rows, cols, heads) = (8, 3, 2);
        let w: Vec<u32> = (0..(rows * cols) as u32).collect();
        let p = permute_qk_rows(&w, rows, cols, heads).unwrap();
        let half = rows / heads / 2;
        let mut expected = Vec::new();
        for h in 0..heads {
            for i in 0..half {
                for j in 0..2 {
                    let src = h * rows / heads + j * half + i;
                    expected.extend_from_slice(&w[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_eq!(p, expected);
        assert_eq!(gguf_qk("blk.3.attn_q.weight"), Some(true));
        assert_eq!(gguf_qk("blk.3.attn_k.bias"), Some(false));
        assert_eq!(gguf_qk("blk.3.attn_v.weight"), None);
        assert!(qk_permuted(NameArch::Llama) && !qk_permuted(NameArch::Qwen2));
    }

    #[test]
    fn permute_rejects_bad_shapes() {
        let w = [0f32; 12];
        assert!(permute_qk_rows(&w, 6, 2, 2).is_err()); // 3 rows per head
        assert!(unpermute_qk_rows(&w, 4, 2, 2).is_err()); // 8 values expected
        assert!(unpermute_qk_rows(&w, 4, 3, 0).is_err());
    }

    proptest! {
        #[test]
        fn unpermute_inverts_permute(
            heads in 1usize..6,
            half in 1usize..9,
            cols in 1usize..7,
            seed in any::<u64>(),
        ) {
            let rows = heads * half * 2;
            let mut s = seed;
            let w: Vec<f32> = (0..rows * cols)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (s >> 40) as f32 / 1024.0 - 8192.0
                })
                .collect();
            let p = permute_qk_rows(&w, rows, cols, heads).unwrap();
            prop_assert_eq!(unpermute_qk_rows(&p, rows, cols, heads).unwrap(), w.clone());
            let u = unpermute_qk_rows(&w, rows, cols, heads).unwrap();
            prop_assert_eq!(permute_qk_rows(&u, rows, cols, heads).unwrap(), w);
        }

        #[test]
        fn names_round_trip(layer in 0usize..200, stem in 0usize..9, bias in any::<bool>()) {
            for arch in ALL {
                let (g, _) = LAYER[stem];
                let kind = if bias { "bias" } else { "weight" };
                let name = format!("blk.{layer}.{g}.{kind}");
                match gguf_to_hf(arch, &name) {
                    Ok(h) => prop_assert_eq!(hf_to_gguf(arch, &h).unwrap(), name),
                    Err(_) => prop_assert!(bias && !bias_allowed(arch, g)),
                }
            }
        }
    }
}
