//! Export: a forge-model model (with forge-peft adapters fused, or the
//! adapters alone) to llama.cpp GGUF files and an Ollama Modelfile.
//!
//! The engine (names, Q/K permutation, metadata, quantization mixtures,
//! streaming atomic write) is [`forge_gguf::export`]; this module supplies
//! what it needs from a loaded model: the tensors of an MLX [`Model`] as a
//! [`TensorSource`], a [`ModelSpec`] from the model's configuration and its
//! source's tokenizer, and adapters fused (`W' = W + s·BA`, forge-peft's
//! `merged_model`) or converted to a GGUF LoRA ([`LoraSpec`]).
//!
//! MoE/DLP routers are not mergeable into one weight set; they are not
//! exported here (forge-peft has no router adapters to export yet).

use std::path::{Path, PathBuf};

use forge_gguf::export::{
    ExportProgress, ExportReport, FileType, GgufTensors, HyperParams, LoraModule, LoraSpec,
    ModelSpec, OllamaOptions, Policy, RopeScalingSpec, TensorSource, TokenizerSpec,
    ollama_modelfile,
};
use forge_gguf::{GgufFile, NameArch};
use forge_model::{
    Architecture, LoadOptions, Model, ModelConfig, ModelSource, RopeScaling, default_model_path,
};
use forge_peft::{
    ADAPTER_CONFIG, DLP_CONFIG, MLX_LM_WEIGHTS, MOE_CONFIG, MOE_WEIGHTS, PEFT_WEIGHTS, PeftModel,
};
use mlx_rs::module::ModuleParameters;
use mlx_rs::{Array, Dtype};

use crate::{Error, Result};

fn export_err(message: impl Into<String>) -> Error {
    Error::Gguf(forge_gguf::Error::Export(message.into()))
}

/// The tensors of an MLX [`Model`] (its parameters, Hugging Face names) as
/// a [`TensorSource`]; each is evaluated and copied to the host as f32 when
/// the export asks for it.
pub struct ModelTensors<'a> {
    model: &'a Model,
}

impl<'a> ModelTensors<'a> {
    /// The parameters of `model`.
    pub fn new(model: &'a Model) -> Self {
        Self { model }
    }
}

fn host_f32(name: &str, a: &Array) -> forge_gguf::Result<Vec<f32>> {
    let f = a
        .as_dtype(Dtype::Float32)
        .map_err(|e| forge_gguf::Error::Export(format!("tensor `{name}`: {e}")))?;
    f.eval()
        .map_err(|e| forge_gguf::Error::Export(format!("tensor `{name}`: {e}")))?;
    f.try_as_slice::<f32>()
        .map(<[f32]>::to_vec)
        .map_err(|e| forge_gguf::Error::Export(format!("tensor `{name}`: {e}")))
}

impl TensorSource for ModelTensors<'_> {
    fn tensor_list(&self) -> Vec<(String, Vec<usize>)> {
        let mut v: Vec<(String, Vec<usize>)> = self
            .model
            .parameters()
            .flatten()
            .into_iter()
            .map(|(k, a)| {
                (
                    k.to_string(),
                    a.shape().iter().map(|&d| d as usize).collect(),
                )
            })
            .collect();
        v.sort();
        v
    }

    fn read_f32(&mut self, name: &str) -> forge_gguf::Result<Vec<f32>> {
        let params = self.model.parameters().flatten();
        let a = params.get(name).ok_or_else(|| {
            forge_gguf::Error::Export(format!("the model has no parameter `{name}`"))
        })?;
        host_f32(name, a)
    }
}

fn name_arch(a: Architecture) -> NameArch {
    match a {
        Architecture::Llama => NameArch::Llama,
        Architecture::Qwen2 => NameArch::Qwen2,
        Architecture::Mistral => NameArch::Mistral,
    }
}

/// The hyper-parameters of a model configuration.
pub fn hyper_params(c: &ModelConfig) -> HyperParams {
    let rope_scaling = match c.rope_scaling {
        RopeScaling::None => RopeScalingSpec::None,
        RopeScaling::Linear { factor } => RopeScalingSpec::Linear { factor },
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => RopeScalingSpec::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        },
    };
    HyperParams {
        context_length: c.max_position_embeddings as u32,
        embedding_length: c.hidden_size as u32,
        feed_forward_length: c.intermediate_size as u32,
        block_count: c.num_layers as u32,
        head_count: c.num_heads as u32,
        head_count_kv: c.num_kv_heads as u32,
        head_dim: c.head_dim as u32,
        rms_norm_eps: c.rms_norm_eps,
        rope_freq_base: c.rope_theta,
        rope_scaling,
        vocab_size: c.vocab_size as u32,
    }
}

fn source_path(source: &ModelSource) -> Result<PathBuf> {
    Ok(match source {
        ModelSource::HfDir(p) | ModelSource::Gguf(p) => p.clone(),
        ModelSource::Default => default_model_path()?,
    })
}

/// The export description of a model loaded from `source` with
/// configuration `config`: hyper-parameters from the configuration, the
/// tokenizer (and descriptive `general.*` keys) from the source — a GGUF
/// file's `tokenizer.*` metadata, or a folder's `tokenizer.json` and
/// `tokenizer_config.json`.
pub fn model_spec(config: &ModelConfig, source: &ModelSource) -> Result<ModelSpec> {
    let path = source_path(source)?;
    let arch = name_arch(config.architecture);
    let hparams = hyper_params(config);
    let tied = config.tie_word_embeddings;
    match source {
        ModelSource::HfDir(dir) => {
            let tokenizer = TokenizerSpec::from_hf_dir(dir, config.vocab_size)?;
            let name = dir
                .file_name()
                .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
            Ok(ModelSpec::new(arch, hparams, tied, tokenizer, name))
        }
        ModelSource::Gguf(_) | ModelSource::Default => {
            let file = GgufFile::open(&path)?;
            let mut spec = ModelSpec::from_gguf(&file)?;
            spec.arch = arch;
            spec.hparams = hparams;
            spec.tied_embeddings = tied;
            Ok(spec)
        }
    }
}

/// Loads `model`'s adapters from `dir` (PEFT layout when
/// `adapter_model.safetensors` is there, else mlx-lm's `adapters.safetensors`).
pub fn load_adapter(model: Model, dir: &Path) -> Result<PeftModel> {
    if dir.join(PEFT_WEIGHTS).is_file() {
        Ok(PeftModel::load_peft(model, dir)?)
    } else if dir.join(MLX_LM_WEIGHTS).is_file() {
        Ok(PeftModel::load_mlx_lm(model, dir)?)
    } else if dir.join(MOE_CONFIG).is_file() || dir.join(MOE_WEIGHTS).is_file() {
        Err(export_err(format!(
            "{}: a MoELoRA adapter: its experts are mixed per token by a router, so they cannot be \
             fused into the base weights nor written as one GGUF LoRA; serve it with \
             `MoeLoraModel::load`, or export the experts as separate PEFT adapters \
             (`MoeLoraModel::export_experts`) and fuse one of them",
            dir.display()
        )))
    } else if dir.join(DLP_CONFIG).is_file() {
        Err(export_err(format!(
            "{}: a DLP-LoRA library: its LoRAs are fused per request by the plugin \
             (`DlpLora::fused_for`), not once; fuse one of its LoRAs instead",
            dir.display()
        )))
    } else {
        Err(export_err(format!(
            "{}: no {PEFT_WEIGHTS} or {MLX_LM_WEIGHTS} (with {ADAPTER_CONFIG}) to load",
            dir.display()
        )))
    }
}

/// `model` with the adapters of `dir` fused into its weights.
pub fn fuse_adapter(model: Model, dir: &Path) -> Result<Model> {
    Ok(load_adapter(model, dir)?.merged_model()?)
}

/// The adapters of `peft` as a GGUF LoRA description (plain LoRA on the
/// original base; PiSSA converted to rank 2r). DoRA magnitudes have no
/// llama.cpp equivalent: fuse those instead. `config` is the base model's.
pub fn lora_spec(peft: &PeftModel, config: &ModelConfig, name: &str) -> Result<LoraSpec> {
    let mut modules = Vec::new();
    for p in peft.to_plain_lora()? {
        if p.magnitude.is_some() {
            return Err(export_err(format!(
                "module `{}` is DoRA; llama.cpp LoRA files cannot hold the magnitude: export the \
                 fused model instead",
                p.module
            )));
        }
        let (rank, in_features) = (p.a.shape()[0] as usize, p.a.shape()[1] as usize);
        let out_features = p.b.shape()[0] as usize;
        modules.push(LoraModule {
            a: host_f32(&format!("{}.lora_a", p.module), &p.a)?,
            b: host_f32(&format!("{}.lora_b", p.module), &p.b)?,
            module: p.module,
            rank,
            in_features,
            out_features,
            scale: p.scale,
        });
    }
    Ok(LoraSpec {
        arch: name_arch(config.architecture),
        head_count: config.num_heads,
        head_count_kv: config.num_kv_heads,
        name: name.to_string(),
        modules,
    })
}

/// What [`export`] should write.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// The file type.
    pub file_type: FileType,
    /// `--pure`: no Q4_K_M/Q5_K_M mixture.
    pub pure: bool,
    /// Adapters to fuse before export.
    pub adapter: Option<PathBuf>,
}

impl ExportOptions {
    /// Export as `file_type`, mixture on, no adapter.
    pub fn new(file_type: FileType) -> Self {
        Self {
            file_type,
            pure: false,
            adapter: None,
        }
    }

    /// Sets `--pure`.
    #[must_use]
    pub fn with_pure(mut self, pure: bool) -> Self {
        self.pure = pure;
        self
    }

    /// Fuses the adapters of `dir` before exporting.
    #[must_use]
    pub fn with_adapter(mut self, dir: impl Into<PathBuf>) -> Self {
        self.adapter = Some(dir.into());
        self
    }
}

/// Exports an MLX model (e.g. one with adapters fused) described by `spec`.
pub fn export_loaded(
    model: &Model,
    spec: &ModelSpec,
    options: &ExportOptions,
    out: &Path,
    progress: &mut dyn FnMut(&ExportProgress<'_>),
) -> Result<ExportReport> {
    let policy = Policy::new(
        options.file_type,
        spec.hparams.block_count as usize,
        spec.tied_embeddings,
    )
    .with_pure(options.pure);
    let mut tensors = ModelTensors::new(model);
    Ok(forge_gguf::export::export_model(
        spec,
        &mut tensors,
        &policy,
        out,
        progress,
    )?)
}

/// Exports the model of `source` to `out`, returning the report and the
/// description written (for a Modelfile). Without an adapter, a GGUF source
/// is re-quantized in pure Rust straight from the file (no MLX); otherwise
/// the model is loaded with forge-model, the adapters fused with
/// forge-peft, and the fused f32 weights exported.
pub fn export(
    source: &ModelSource,
    options: &ExportOptions,
    out: &Path,
    progress: &mut dyn FnMut(&ExportProgress<'_>),
) -> Result<(ExportReport, ModelSpec)> {
    let path = source_path(source)?;
    if options.adapter.is_none() && !matches!(source, ModelSource::HfDir(_)) {
        let file = GgufFile::open(&path)?;
        let spec = ModelSpec::from_gguf(&file)?;
        let policy = Policy::new(
            options.file_type,
            spec.hparams.block_count as usize,
            spec.tied_embeddings,
        )
        .with_pure(options.pure);
        let mut tensors = GgufTensors::new(&file)?;
        let report = forge_gguf::export::export_model(&spec, &mut tensors, &policy, out, progress)?;
        return Ok((report, spec));
    }
    let loaded = forge_model::load(source, &LoadOptions::new().with_tokenizer(false))?;
    let spec = model_spec(loaded.model.config(), source)?;
    let model = match &options.adapter {
        Some(dir) => fuse_adapter(loaded.model, dir)?,
        None => loaded.model,
    };
    let report = export_loaded(&model, &spec, options, out, progress)?;
    Ok((report, spec))
}

/// Writes the adapters of `adapter_dir` (trained on the model of `source`)
/// as a GGUF LoRA adapter (`file_type` F32, F16 or BF16).
pub fn export_adapter(
    source: &ModelSource,
    adapter_dir: &Path,
    file_type: FileType,
    out: &Path,
) -> Result<ExportReport> {
    let loaded = forge_model::load(source, &LoadOptions::new().with_tokenizer(false))?;
    let config = loaded.model.config().clone();
    let peft = load_adapter(loaded.model, adapter_dir)?;
    let name = adapter_dir.file_name().map_or_else(
        || "adapter".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let spec = lora_spec(&peft, &config, &name)?;
    Ok(forge_gguf::export::export_lora(&spec, file_type, out)?)
}

/// Writes `Modelfile` beside `gguf` (atomically) for Ollama and returns its
/// path; `FROM` names the GGUF file relative to the Modelfile.
pub fn write_modelfile(
    gguf: &Path,
    tokenizer: &TokenizerSpec,
    options: &OllamaOptions,
) -> Result<PathBuf> {
    let dir = gguf
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = gguf
        .file_name()
        .ok_or_else(|| export_err(format!("{} does not name a file", gguf.display())))?;
    let text = ollama_modelfile(
        &format!("./{}", file_name.to_string_lossy()),
        tokenizer,
        options,
    )?;
    let path = dir.join("Modelfile");
    let tmp = dir.join(format!(".Modelfile.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            Error::Gguf(forge_gguf::Error::Io {
                path: path.clone(),
                source: e,
            })
        })?;
    Ok(path)
}
