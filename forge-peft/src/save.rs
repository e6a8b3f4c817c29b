//! Adapter files: Hugging Face PEFT layout, mlx-lm layout, PiSSA → LoRA
//! conversion.
//!
//! **PEFT** (`adapter_model.safetensors` + `adapter_config.json`): tensors
//! `base_model.model.<module>.lora_A.weight` `[r, in]`,
//! `base_model.model.<module>.lora_B.weight` `[out, r]` and, for DoRA,
//! `base_model.model.<module>.lora_magnitude_vector` `[out]`; the config has
//! `peft_type: "LORA"`, `r`, `lora_alpha`, `rank_pattern`/`alpha_pattern` for
//! modules that differ, `use_rslora`, `use_dora` and `target_modules` (the full
//! module names, which PEFT matches as suffixes). PEFT's scale is
//! `lora_alpha / r` (`/ √r` with `use_rslora`).
//!
//! **mlx-lm** (`adapters.safetensors` + `adapter_config.json`): tensors
//! `<module>.lora_a` `[in, r]`, `<module>.lora_b` `[r, out]`, DoRA `<module>.m`
//! `[out]`; the config has `fine_tune_type` (`lora`/`dora`), `num_layers`
//! (adapters on the **last** `num_layers` blocks) and `lora_parameters`
//! `{rank, scale, dropout, keys}` — one rank and scale for every module, so
//! heterogeneous targets cannot be written in this layout.
//!
//! **PiSSA → LoRA** (Meng et al. 2024, §4.4 / PEFT's
//! `path_initial_model_for_weight_conversion`): PiSSA trains on the residual
//! base `W_res = W − s·B₀A₀`; relative to the original `W` the update is
//! `ΔW = s·BA − s·B₀A₀ = s·[B | −B₀][A ; A₀]`, a plain LoRA of rank `2r`
//! that applies to the unmodified base. (For QPiSSA this drops the residual's
//! quantization error: the converted adapter is exact on the full-precision
//! `W`.) CLoQ adapters are written as they are: they belong to the quantized
//! base `Q(W)` (same MLX quantization: the config records bits and group size).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use forge_model::Model;
use mlx_rs::Array;
use serde_json::{Value, json};

use crate::adapter::Adapter;
use crate::error::{Error, Result};
use crate::methods::Method;
use crate::model::PeftModel;
use crate::util::{host_f32, write_atomic};

/// PEFT's weights file.
pub const PEFT_WEIGHTS: &str = "adapter_model.safetensors";
/// mlx-lm's weights file.
pub const MLX_LM_WEIGHTS: &str = "adapters.safetensors";
/// Both layouts' config file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
const PEFT_PREFIX: &str = "base_model.model.";

/// `(A, B, magnitude)` of one module while reading a file.
type Parts = (Option<Array>, Option<Array>, Option<Array>);

/// One module's adapter as plain LoRA relative to the original base.
#[derive(Debug, Clone)]
pub struct PlainLora {
    /// Module name (`model.layers.0.self_attn.q_proj`).
    pub module: String,
    /// `[r, in]`.
    pub a: Array,
    /// `[out, r]`.
    pub b: Array,
    /// Scale `s`.
    pub scale: f32,
    /// DoRA magnitude.
    pub magnitude: Option<Array>,
}

fn plain(module: String, ad: &Adapter) -> Result<PlainLora> {
    let (a, b) = match (&ad.init, ad.method) {
        (Some((a0, b0)), Method::Pissa) => (
            mlx_rs::ops::concatenate(&[&ad.a, a0], 0)?,
            mlx_rs::ops::concatenate(&[&ad.b, &b0.negative()?], 1)?,
        ),
        _ => (ad.a.clone(), ad.b.clone()),
    };
    Ok(PlainLora {
        module,
        a,
        b,
        scale: ad.scale,
        magnitude: ad.magnitude.clone(),
    })
}

impl PeftModel {
    /// Every adapter as plain LoRA on the original base (PiSSA converted to
    /// rank `2r`; the others unchanged).
    pub fn to_plain_lora(&self) -> Result<Vec<PlainLora>> {
        self.modules()
            .filter_map(|(name, l)| l.adapter().map(|a| plain(name, a)))
            .collect()
    }
}

fn f32_bytes(a: &Array) -> Result<Vec<u8>> {
    Ok(host_f32(a)?.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Writes f32 tensors as safetensors, atomically.
pub(crate) fn write_tensors(
    path: &Path,
    tensors: &BTreeMap<String, Array>,
    meta: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let mut data = Vec::with_capacity(tensors.len());
    for (k, v) in tensors {
        let shape: Vec<usize> = v.shape().iter().map(|&d| d as usize).collect();
        data.push((k.clone(), shape, f32_bytes(v)?));
    }
    let views = data
        .iter()
        .map(|(k, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::Safetensors {
                    path: path.to_path_buf(),
                    message: format!("tensor `{k}`: {e}"),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, meta).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// Reads every tensor of a safetensors file as f32 arrays.
pub(crate) fn read_tensors(path: &Path) -> Result<BTreeMap<String, Array>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        message: format!("invalid safetensors file: {e}"),
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape: Vec<i32> = view.shape().iter().map(|&d| d as i32).collect();
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            safetensors::Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            safetensors::Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            other => {
                return Err(Error::Safetensors {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor `{name}` has dtype {other:?}, expected F32, F16 or BF16"
                    ),
                });
            }
        };
        out.insert(name, Array::from_slice(&values, &shape));
    }
    Ok(out)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes `v` as pretty JSON atomically; a serialization error names `path`.
pub(crate) fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<()> {
    let s = serde_json::to_vec_pretty(v).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &s)
}

fn mkdir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

impl PeftModel {
    /// Writes the adapters in Hugging Face PEFT's layout to `dir`.
    /// `base_model` goes to `base_model_name_or_path`.
    pub fn save_peft(&self, dir: impl AsRef<Path>, base_model: &str) -> Result<PathBuf> {
        let dir = dir.as_ref();
        mkdir(dir)?;
        let adapters = self.to_plain_lora()?;
        let rslora = self.config().method == Method::RsLora;
        let dora = adapters.iter().any(|a| a.magnitude.is_some());
        let alpha_of = |p: &PlainLora| {
            let r = p.a.dim(0) as f32;
            p.scale * if rslora { r.sqrt() } else { r }
        };
        let first = adapters
            .first()
            .ok_or_else(|| Error::Unsupported("no adapters to save".into()))?;
        let (r0, a0) = (first.a.dim(0), alpha_of(first));
        let mut tensors = BTreeMap::new();
        let (mut rank_pattern, mut alpha_pattern) =
            (serde_json::Map::new(), serde_json::Map::new());
        for p in &adapters {
            tensors.insert(
                format!("{PEFT_PREFIX}{}.lora_A.weight", p.module),
                p.a.clone(),
            );
            tensors.insert(
                format!("{PEFT_PREFIX}{}.lora_B.weight", p.module),
                p.b.clone(),
            );
            if let Some(m) = &p.magnitude {
                tensors.insert(
                    format!("{PEFT_PREFIX}{}.lora_magnitude_vector", p.module),
                    m.clone(),
                );
            }
            if p.a.dim(0) != r0 {
                rank_pattern.insert(p.module.clone(), json!(p.a.dim(0)));
            }
            if (alpha_of(p) - a0).abs() > 1e-6 * a0.abs() {
                alpha_pattern.insert(p.module.clone(), json!(alpha_of(p)));
            }
        }
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        write_tensors(&dir.join(PEFT_WEIGHTS), &tensors, Some(meta))?;
        let c = self.config();
        let config = json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": r0,
            "lora_alpha": a0,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": false,
            "use_rslora": rslora,
            "use_dora": dora,
            "init_lora_weights": true,
            "inference_mode": true,
            "target_modules": adapters.iter().map(|p| p.module.clone()).collect::<Vec<_>>(),
            "rank_pattern": rank_pattern,
            "alpha_pattern": alpha_pattern,
            "modules_to_save": null,
            "layers_to_transform": null,
            "forge": {
                "method": c.method.as_str(),
                "converted_from_pissa": c.method == Method::Pissa,
                "quantized_base": c.quantized_base,
            },
        });
        write_json(&dir.join(ADAPTER_CONFIG), &config)?;
        Ok(dir.to_path_buf())
    }

    /// Writes the adapters in mlx-lm's layout to `dir` (`mlx_lm.load(...,
    /// adapter_path=dir)` and `mlx_lm.fuse` read it).
    pub fn save_mlx_lm(&self, dir: impl AsRef<Path>) -> Result<PathBuf> {
        let dir = dir.as_ref();
        let adapters = self.to_plain_lora()?;
        let first = adapters
            .first()
            .ok_or_else(|| Error::Unsupported("no adapters to save".into()))?;
        let (rank, scale) = (first.a.dim(0), first.scale);
        let n_layers = self.model_config().num_layers;
        let mut keys: Vec<String> = Vec::new();
        let mut layers = std::collections::BTreeSet::new();
        for p in &adapters {
            if p.a.dim(0) != rank || (p.scale - scale).abs() > 1e-6 * scale.abs() {
                return Err(Error::Unsupported(format!(
                    "mlx-lm adapters have one rank and scale; `{}` has rank {} scale {} but `{}` has rank {rank} scale {scale}",
                    p.module,
                    p.a.dim(0),
                    p.scale,
                    first.module
                )));
            }
            let rest = p.module.strip_prefix("model.layers.").unwrap_or(&p.module);
            let (i, key) = rest.split_once('.').unwrap_or(("0", rest));
            layers.insert(i.parse::<usize>().unwrap_or(0));
            if !keys.iter().any(|k| k == key) {
                keys.push(key.to_string());
            }
        }
        let lo = n_layers - layers.len();
        let expected: std::collections::BTreeSet<usize> = (lo..n_layers).collect();
        if layers != expected || adapters.len() != keys.len() * layers.len() {
            return Err(Error::Unsupported(format!(
                "mlx-lm applies the same keys to the last `num_layers` blocks; these adapters cover layers {layers:?} with keys {keys:?}"
            )));
        }
        mkdir(dir)?;
        let mut tensors = BTreeMap::new();
        for p in &adapters {
            tensors.insert(format!("{}.lora_a", p.module), p.a.t());
            tensors.insert(format!("{}.lora_b", p.module), p.b.t());
            if let Some(m) = &p.magnitude {
                tensors.insert(format!("{}.m", p.module), m.clone());
            }
        }
        let dora = adapters.iter().any(|a| a.magnitude.is_some());
        write_tensors(&dir.join(MLX_LM_WEIGHTS), &tensors, None)?;
        let config = json!({
            "fine_tune_type": if dora { "dora" } else { "lora" },
            "num_layers": layers.len(),
            "lora_parameters": {"rank": rank, "scale": scale, "dropout": 0.0, "keys": keys},
        });
        write_json(&dir.join(ADAPTER_CONFIG), &config)?;
        Ok(dir.to_path_buf())
    }

    /// Loads PEFT-layout adapters onto `model` (plain LoRA / rsLoRA / DoRA).
    pub fn load_peft(model: Model, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let cpath = dir.join(ADAPTER_CONFIG);
        let cfg = read_json(&cpath)?;
        let get = |k: &str| cfg.get(k).cloned().unwrap_or(Value::Null);
        if get("peft_type").as_str() != Some("LORA") {
            return Err(Error::Json {
                path: cpath,
                message: format!("`peft_type` is {}, expected \"LORA\"", get("peft_type")),
            });
        }
        let rslora = get("use_rslora").as_bool().unwrap_or(false);
        let default_alpha = get("lora_alpha").as_f64().unwrap_or(8.0) as f32;
        let alpha_pattern = get("alpha_pattern");
        let wpath = dir.join(PEFT_WEIGHTS);
        let t = read_tensors(&wpath)?;
        let mut mods: BTreeMap<String, Parts> = BTreeMap::new();
        for (k, v) in t {
            let Some(rest) = k.strip_prefix(PEFT_PREFIX) else {
                return Err(Error::Safetensors {
                    path: wpath,
                    message: format!("tensor `{k}` does not start with `{PEFT_PREFIX}`"),
                });
            };
            if let Some(m) = rest.strip_suffix(".lora_A.weight") {
                mods.entry(m.to_string()).or_default().0 = Some(v);
            } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
                mods.entry(m.to_string()).or_default().1 = Some(v);
            } else if let Some(m) = rest.strip_suffix(".lora_magnitude_vector") {
                mods.entry(m.to_string()).or_default().2 = Some(v);
            } else {
                return Err(Error::Safetensors {
                    path: wpath,
                    message: format!("tensor `{k}` is not a LoRA tensor"),
                });
            }
        }
        let mut entries = Vec::new();
        for (m, (a, b, mag)) in mods {
            let a = a.ok_or_else(|| Error::Safetensors {
                path: wpath.clone(),
                message: format!("missing `{PEFT_PREFIX}{m}.lora_A.weight`"),
            })?;
            let b = b.ok_or_else(|| Error::Safetensors {
                path: wpath.clone(),
                message: format!("missing `{PEFT_PREFIX}{m}.lora_B.weight`"),
            })?;
            let r = a.dim(0) as f32;
            let alpha = alpha_pattern
                .as_object()
                .and_then(|o| {
                    o.iter()
                        .find(|(k, _)| m == **k || m.ends_with(&format!(".{k}")))
                })
                .and_then(|(_, v)| v.as_f64())
                .map_or(default_alpha, |x| x as f32);
            let scale = if rslora { alpha / r.sqrt() } else { alpha / r };
            entries.push(PlainLora {
                module: m,
                a,
                b,
                scale,
                magnitude: mag,
            });
        }
        let method = if entries.iter().any(|e| e.magnitude.is_some()) {
            Method::Dora
        } else if rslora {
            Method::RsLora
        } else {
            Method::Lora
        };
        Self::from_plain(model, method, entries, &wpath)
    }

    /// Loads mlx-lm-layout adapters onto `model`.
    pub fn load_mlx_lm(model: Model, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let cpath = dir.join(ADAPTER_CONFIG);
        let cfg = read_json(&cpath)?;
        let scale = cfg
            .pointer("/lora_parameters/scale")
            .and_then(Value::as_f64)
            .ok_or_else(|| Error::Json {
                path: cpath.clone(),
                message: "missing `lora_parameters.scale`".into(),
            })? as f32;
        let wpath = dir.join(MLX_LM_WEIGHTS);
        let t = read_tensors(&wpath)?;
        let mut mods: BTreeMap<String, Parts> = BTreeMap::new();
        for (k, v) in t {
            if let Some(m) = k.strip_suffix(".lora_a") {
                mods.entry(m.to_string()).or_default().0 = Some(v.t());
            } else if let Some(m) = k.strip_suffix(".lora_b") {
                mods.entry(m.to_string()).or_default().1 = Some(v.t());
            } else if let Some(m) = k.strip_suffix(".m") {
                mods.entry(m.to_string()).or_default().2 = Some(v);
            } else {
                return Err(Error::Safetensors {
                    path: wpath,
                    message: format!("tensor `{k}` is not an adapter tensor"),
                });
            }
        }
        let mut entries = Vec::new();
        for (m, (a, b, mag)) in mods {
            let a = a.ok_or_else(|| Error::Safetensors {
                path: wpath.clone(),
                message: format!("missing `{m}.lora_a`"),
            })?;
            let b = b.ok_or_else(|| Error::Safetensors {
                path: wpath.clone(),
                message: format!("missing `{m}.lora_b`"),
            })?;
            entries.push(PlainLora {
                module: m,
                a,
                b,
                scale,
                magnitude: mag,
            });
        }
        let method = if entries.iter().any(|e| e.magnitude.is_some()) {
            Method::Dora
        } else {
            Method::Lora
        };
        Self::from_plain(model, method, entries, &wpath)
    }

    fn from_plain(
        model: Model,
        method: Method,
        entries: Vec<PlainLora>,
        path: &Path,
    ) -> Result<Self> {
        let targets: Vec<String> = entries.iter().map(|e| e.module.clone()).collect();
        let first = entries.first().ok_or_else(|| Error::Safetensors {
            path: path.to_path_buf(),
            message: "no adapter tensors".into(),
        })?;
        let config =
            crate::PeftConfig::new(method, first.a.dim(0) as usize, 1.0).with_targets(targets);
        let mut this = Self::plain(model, config);
        for e in entries {
            let lin = this
                .module_mut(&e.module)
                .ok_or_else(|| Error::Safetensors {
                    path: path.to_path_buf(),
                    message: format!("module `{}` is not a projection of this model", e.module),
                })?;
            let [out, inp] = lin.base.shape();
            let r = e.a.dim(0);
            if e.a.shape() != [r, inp] {
                return Err(Error::Shape {
                    path: path.to_path_buf(),
                    name: format!("{}.lora_A", e.module),
                    found: e.a.shape().to_vec(),
                    expected: vec![r, inp],
                });
            }
            if e.b.shape() != [out, r] {
                return Err(Error::Shape {
                    path: path.to_path_buf(),
                    name: format!("{}.lora_B", e.module),
                    found: e.b.shape().to_vec(),
                    expected: vec![out, r],
                });
            }
            lin.adapter = Some(Adapter {
                method,
                rank: r as usize,
                alpha: e.scale * r as f32,
                scale: e.scale,
                a: e.a,
                b: e.b,
                magnitude: e.magnitude,
                init: None,
                detach_norm: true,
            });
        }
        Ok(this)
    }
}
