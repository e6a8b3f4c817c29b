//! The training loop: gradient accumulation, clipping, AdamW with a
//! schedule, evaluation, atomic checkpoints with exact resume, a divergence
//! guard, JSONL metrics and a progress callback.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mlx_rs::Array;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::loss::{Batch, masked_nll_sum};
use crate::save::{read_tensors, write_tensors};
use crate::train::adam8bit::AdamW8bit;
use crate::train::data::{Example, micro_batch};
use crate::train::optim::{
    AdamState, AdamW, FusedAdamW, FusedStep, Schedule, global_norm, learning_rate,
};
use crate::train::trainable::{CompiledLossGrad, LossGrad, Trainable, loss_and_grad_aux};
use crate::util::write_atomic;

/// Optimisation and bookkeeping options (the `[train]` table of the TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainOptions {
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step (the loss is averaged over all their tokens).
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Final learning rate of the decay.
    pub min_lr: f32,
    /// Linear warmup steps.
    pub warmup: usize,
    /// Decay after warmup.
    pub schedule: Schedule,
    /// AdamW λ (not applied to biases, norms, DoRA magnitudes).
    pub weight_decay: f32,
    /// AdamW β₁.
    pub beta1: f32,
    /// AdamW β₂.
    pub beta2: f32,
    /// AdamW ε.
    pub eps: f32,
    /// Clip the global gradient norm to this value (0 = off).
    pub clip_grad_norm: f32,
    /// Without clipping, measure the global gradient norm (for the metrics
    /// and the divergence guard) every N steps, from the first (0 = never;
    /// `grad_norm` is then NaN in the metrics of the steps in between).
    /// With clipping it is measured every step. On a GPU the norm is two
    /// small kernels per trainable array, a measurable share of a LoRA
    /// step on a small model.
    pub grad_norm_every: usize,
    /// Validation every N steps (0 = never).
    pub eval_every: usize,
    /// Validation batches per evaluation.
    pub eval_batches: usize,
    /// Checkpoint every N steps (0 = never).
    pub save_every: usize,
    /// Data-order seed.
    pub seed: u64,
    /// Stop when the loss exceeds this multiple of its running mean.
    pub spike_factor: f32,
    /// Steps before the spike test starts.
    pub spike_warmup: usize,
    /// `adamw` (32-bit moments) or `adamw-8bit` (block-wise 8-bit moments,
    /// Dettmers et al. 2021).
    pub optimizer: OptimizerKind,
    /// Recompute each decoder block in the backward pass instead of keeping
    /// its activations (less memory, about one more forward of compute).
    pub grad_checkpoint: bool,
    /// Compile the training step with MLX `compile`: the forward, loss and
    /// backward of a micro-batch are traced once per input shape and
    /// replayed with element-wise chains fused, and the AdamW update of all
    /// adapters (with gradient averaging and clipping) is one fused
    /// function. Same results as uncompiled to float rounding.
    pub compile: bool,
    /// With the compiled step and AdamW: queue step n+1 on the device
    /// before landing step n (reading its loss, the guard, metrics,
    /// checkpoint), so the host's work for a step can overlap the device's.
    /// Same results. Off by default: on an H200 with MLX's direct CUDA
    /// launches it gained nothing on a Llama-1B-like step (the host already
    /// runs ahead of the device) and lost 40 % on SmolLM2-135M
    /// (docs/benchmarks.md).
    pub overlap_steps: bool,
    /// The dtype the base model computes in when `forge train` / the
    /// pipeline load it: `auto` (bf16 on a GPU, as stored on the CPU),
    /// `f32`, `bf16` or `f16`. Adapters and optimizer state stay f32.
    pub compute_dtype: ComputeDtype,
    /// Run directory: `metrics.jsonl`, `checkpoints/`.
    pub output_dir: Option<PathBuf>,
    /// Stop after this many steps in this call (the schedule still spans
    /// `steps`); for interrupting and resuming.
    #[serde(skip)]
    pub stop_after: Option<usize>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            steps: 100,
            batch_size: 4,
            grad_accum: 1,
            lr: 1e-4,
            min_lr: 0.0,
            warmup: 0,
            schedule: Schedule::Cosine,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            clip_grad_norm: 1.0,
            grad_norm_every: 1,
            eval_every: 0,
            eval_batches: 4,
            save_every: 0,
            seed: 0,
            spike_factor: 4.0,
            spike_warmup: 10,
            optimizer: OptimizerKind::AdamW,
            grad_checkpoint: false,
            compile: true,
            overlap_steps: false,
            compute_dtype: ComputeDtype::Auto,
            output_dir: None,
            stop_after: None,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta] $name:ident: $field:ident: $ty:ty),* $(,)?) => {$(
        #[$doc]
        #[must_use]
        pub fn $name(mut self, v: $ty) -> Self { self.$field = v; self }
    )*};
}

impl TrainOptions {
    /// Defaults with `steps` steps.
    pub fn new(steps: usize) -> Self {
        Self {
            steps,
            ..Self::default()
        }
    }
    setter! {
        /// Batch size.
        with_batch_size: batch_size: usize,
        /// Gradient accumulation.
        with_grad_accum: grad_accum: usize,
        /// Peak learning rate.
        with_lr: lr: f32,
        /// Final learning rate.
        with_min_lr: min_lr: f32,
        /// Warmup steps.
        with_warmup: warmup: usize,
        /// Schedule.
        with_schedule: schedule: Schedule,
        /// Weight decay.
        with_weight_decay: weight_decay: f32,
        /// Gradient clipping (0 = off).
        with_clip_grad_norm: clip_grad_norm: f32,
        /// Gradient-norm period without clipping (0 = never).
        with_grad_norm_every: grad_norm_every: usize,
        /// Evaluation period.
        with_eval_every: eval_every: usize,
        /// Evaluation batches.
        with_eval_batches: eval_batches: usize,
        /// Checkpoint period.
        with_save_every: save_every: usize,
        /// Data seed.
        with_seed: seed: u64,
        /// Spike factor.
        with_spike_factor: spike_factor: f32,
        /// Spike warmup.
        with_spike_warmup: spike_warmup: usize,
        /// Optimizer.
        with_optimizer: optimizer: OptimizerKind,
        /// Gradient checkpointing.
        with_grad_checkpoint: grad_checkpoint: bool,
        /// Compiled training step.
        with_compile: compile: bool,
        /// Overlap consecutive compiled steps.
        with_overlap_steps: overlap_steps: bool,
        /// Base model compute dtype.
        with_compute_dtype: compute_dtype: ComputeDtype,
    }
    /// Run directory.
    #[must_use]
    pub fn with_output_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.output_dir = Some(dir.into());
        self
    }
    /// Stop after `n` steps in this call.
    #[must_use]
    pub fn with_stop_after(mut self, n: usize) -> Self {
        self.stop_after = Some(n);
        self
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size", 0, "at least 1"));
        }
        if self.grad_accum == 0 {
            return Err(Error::invalid("grad_accum", 0, "at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid("lr", self.lr, "a positive number"));
        }
        Ok(())
    }
}

/// The dtype a base model computes in (`[train] compute_dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComputeDtype {
    /// bf16 when MLX's default device is a GPU, else the loaded dtype.
    #[default]
    Auto,
    /// 32-bit floats.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl ComputeDtype {
    /// The dtype to load the base in, `None` for "as loaded" (`auto` on
    /// the CPU).
    pub fn resolve(self) -> Option<mlx_rs::Dtype> {
        match self {
            Self::Auto => {
                let gpu = mlx_rs::Device::try_default()
                    .and_then(|d| d.get_type())
                    .is_ok_and(|t| matches!(t, mlx_rs::DeviceType::Gpu));
                gpu.then_some(mlx_rs::Dtype::Bfloat16)
            }
            Self::F32 => Some(mlx_rs::Dtype::Float32),
            Self::Bf16 => Some(mlx_rs::Dtype::Bfloat16),
            Self::F16 => Some(mlx_rs::Dtype::Float16),
        }
    }
}

/// Which optimizer the trainer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// AdamW with 32-bit moments.
    #[default]
    #[serde(rename = "adamw")]
    AdamW,
    /// AdamW with block-wise 8-bit moments ([`AdamW8bit`]).
    #[serde(rename = "adamw-8bit")]
    AdamW8bit,
}

/// The optimizer in use.
enum Opt {
    F32(AdamW),
    Q8(AdamW8bit),
}

impl Opt {
    fn new(o: &TrainOptions) -> Self {
        match o.optimizer {
            OptimizerKind::AdamW => {
                Self::F32(AdamW::new((o.beta1, o.beta2), o.eps, o.weight_decay))
            }
            OptimizerKind::AdamW8bit => {
                Self::Q8(AdamW8bit::new((o.beta1, o.beta2), o.eps, o.weight_decay))
            }
        }
    }

    fn t(&self) -> u64 {
        match self {
            Self::F32(a) => a.t,
            Self::Q8(a) => a.t,
        }
    }

    fn set_t(&mut self, t: u64) {
        match self {
            Self::F32(a) => a.t = t,
            Self::Q8(a) => a.t = t,
        }
    }

    fn step(
        &mut self,
        params: &BTreeMap<String, Array>,
        grads: &BTreeMap<String, Array>,
        lr: f32,
    ) -> Result<BTreeMap<String, Array>> {
        match self {
            Self::F32(a) => {
                let new = a.step(params, grads, lr)?;
                let mut to_eval: Vec<&Array> = new.values().collect();
                to_eval.extend(a.m.values());
                to_eval.extend(a.v.values());
                mlx_rs::transforms::eval(to_eval)?;
                Ok(new)
            }
            Self::Q8(a) => a.step(params, grads, lr),
        }
    }

    fn state_bytes(&self) -> usize {
        match self {
            Self::F32(a) => a.m.values().chain(a.v.values()).map(|x| x.nbytes()).sum(),
            Self::Q8(a) => a.state_bytes(),
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        match self {
            Self::F32(a) => {
                let mut moments = BTreeMap::new();
                for (k, v) in &a.m {
                    moments.insert(format!("m.{k}"), v.clone());
                }
                for (k, v) in &a.v {
                    moments.insert(format!("v.{k}"), v.clone());
                }
                write_tensors(path, &moments, None)
            }
            Self::Q8(a) => a.save(path),
        }
    }

    fn load(&mut self, path: &Path) -> Result<()> {
        match self {
            Self::F32(a) => {
                let moments = read_tensors(path)?;
                a.m.clear();
                a.v.clear();
                for (k, v) in moments {
                    if let Some(n) = k.strip_prefix("m.") {
                        a.m.insert(n.to_string(), v);
                    } else if let Some(n) = k.strip_prefix("v.") {
                        a.v.insert(n.to_string(), v);
                    }
                }
                Ok(())
            }
            Self::Q8(a) => a.load(path),
        }
    }
}

/// What the progress callback sees after each step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepMetrics {
    /// Steps done.
    pub step: usize,
    /// Total steps.
    pub steps: usize,
    /// Mean training loss of the step.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Gradient norm before clipping (NaN on steps that did not measure it,
    /// see [`TrainOptions::grad_norm_every`]).
    pub grad_norm: f32,
    /// Tokens counted in the loss in the step (padding and masked prompt
    /// tokens excluded; mlx-lm's `Tokens/sec` counts the same).
    pub tokens: usize,
    /// Throughput of the step.
    pub tokens_per_s: f64,
    /// MLX peak memory so far (bytes).
    pub peak_memory: usize,
    /// Process peak RSS so far (bytes, Linux; 0 elsewhere).
    pub peak_rss: usize,
    /// Bytes held by the optimizer's moments.
    pub optimizer_bytes: usize,
    /// Estimated seconds left.
    pub eta_s: f64,
    /// Validation loss, on evaluation steps.
    pub val_loss: Option<f32>,
    /// The model's auxiliary loss per token (MoELoRA: contrastive plus
    /// load balancing, weighted), averaged over the step's tokens; `None`
    /// for models without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_loss: Option<f32>,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    /// Every step's metrics, in order (only this call's steps).
    pub steps: Vec<StepMetrics>,
    /// The last checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    step: usize,
    micro: u64,
    adam_t: u64,
    ema: Option<f64>,
    seed: u64,
    tokens_seen: u64,
}

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<usize>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// A progress callback.
type ProgressFn = Box<dyn FnMut(&StepMetrics)>;

/// The trainer.
pub struct Trainer {
    options: TrainOptions,
    progress: Option<ProgressFn>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn scalar(a: &Array) -> Result<f32> {
    let a = a.as_type::<f32>()?;
    a.eval()?;
    Ok(a.as_slice::<f32>()[0])
}

impl Trainer {
    /// A trainer with `options`.
    pub fn new(options: TrainOptions) -> Self {
        Self {
            options,
            progress: None,
        }
    }

    /// Calls `f` after every step (progress bars, dashboards).
    #[must_use]
    pub fn with_progress(mut self, f: impl FnMut(&StepMetrics) + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Mean validation loss over `batches` batches of `valid`.
    pub fn evaluate<M: Trainable + ?Sized>(
        model: &mut M,
        valid: &[Example],
        batch_size: usize,
        batches: usize,
        pad: u32,
    ) -> Result<f32> {
        let (mut sum, mut n) = (0.0f64, 0.0f64);
        let count = batches.min(valid.len().div_ceil(batch_size.max(1)));
        for k in 0..count {
            let picked: Vec<&Example> =
                valid.iter().skip(k * batch_size).take(batch_size).collect();
            let b = crate::train::data::collate(&picked, pad);
            let logits = model.logits(&b.inputs)?;
            sum += f64::from(scalar(&masked_nll_sum(&logits, &b.targets, &b.mask)?)?);
            n += f64::from(b.num_tokens()?);
        }
        Ok((sum / n.max(1.0)) as f32)
    }

    /// Trains `model` on `train` (validating on `valid`), padding with `pad`,
    /// from scratch or from the checkpoint directory `resume`.
    pub fn run<M: Trainable + ?Sized + 'static>(
        &mut self,
        model: &mut M,
        train: &[Example],
        valid: &[Example],
        pad: u32,
        resume: Option<&Path>,
    ) -> Result<TrainReport> {
        let o = self.options.clone();
        o.validate()?;
        if train.is_empty() {
            return Err(Error::invalid(
                "train",
                "an empty dataset",
                "at least one example",
            ));
        }
        let mut opt = Opt::new(&o);
        let mut st = State {
            step: 0,
            micro: 0,
            adam_t: 0,
            ema: None,
            seed: o.seed,
            tokens_seen: 0,
        };
        let mut last_checkpoint = None;
        if let Some(dir) = resume {
            st = load_checkpoint(model, &mut opt, dir)?;
            last_checkpoint = Some(dir.to_path_buf());
        }
        let mut metrics_file = match &o.output_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
                let p = d.join("metrics.jsonl");
                Some((
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&p)
                        .map_err(|e| Error::io(&p, e))?,
                    p,
                ))
            }
            None => None,
        };
        let mut report = Vec::new();
        let names: Vec<String> = model.trainable_arrays().into_keys().collect();
        let mut compiled = o
            .compile
            .then(|| CompiledLossGrad::<M>::new(names.clone(), o.grad_checkpoint));
        let mut fused = match &opt {
            Opt::F32(a) if o.compile => Some(FusedAdamW::new(names, a, o.clip_grad_norm)),
            _ => None,
        };
        let start_step = st.step;
        let t_run = Instant::now();
        // With the compiled step and the fused update, step n+1 is queued on
        // the device before step n's loss is read (see `InFlight`).
        let mut in_flight: Option<InFlight> = None;
        let mut last_done = Instant::now();
        // Landing a step (`Trainer::land`) with the run's bookkeeping state.
        macro_rules! land {
            ($this:expr, $step:expr) => {
                $this.land(
                    $step,
                    model,
                    &o,
                    valid,
                    pad,
                    &mut st,
                    &mut opt,
                    &mut last_checkpoint,
                    &mut metrics_file,
                    &mut report,
                    (&mut last_done, t_run, start_step),
                )?
            };
        }
        loop {
            // The index of the step built now (one may still be in flight).
            let idx = st.step + usize::from(in_flight.is_some());
            if idx >= o.steps || o.stop_after.is_some_and(|n| idx - start_step >= n) {
                break;
            }
            let t0 = Instant::now();
            let mut gsum: BTreeMap<String, Array> = BTreeMap::new();
            let (mut loss_sum, mut ntok, mut tokens) = (0.0f64, 0.0f64, 0usize);
            let mut aux_sum: Option<f64> = None;
            // Compiled: the last micro-batch's loss is evaluated together
            // with the optimizer update (one synchronisation per step).
            let mut pending: Option<(Array, Option<Array>, f32)> = None;
            for micro in 0..o.grad_accum {
                let batch: Batch = micro_batch(train, o.batch_size, st.seed, st.micro, pad);
                st.micro += 1;
                let n = batch.num_tokens()?;
                tokens += n as usize;
                if n == 0.0 {
                    continue;
                }
                let LossGrad { nll, aux, grads: g } = match compiled.as_mut() {
                    Some(c) => c.call(model, &batch)?,
                    None => loss_and_grad_aux(model, &batch, o.grad_checkpoint)?,
                };
                ntok += f64::from(n);
                for (k, v) in g {
                    let v = match gsum.remove(&k) {
                        Some(acc) => acc.add(&v)?,
                        None => v,
                    };
                    gsum.insert(k, v);
                }
                if fused.is_some() && micro + 1 == o.grad_accum {
                    pending = Some((nll, aux, n));
                    continue;
                }
                if compiled.is_some() {
                    let mut ev: Vec<&Array> = vec![&nll];
                    ev.extend(aux.as_ref());
                    ev.extend(gsum.values());
                    mlx_rs::transforms::eval(ev)?;
                }
                loss_sum += f64::from(scalar(&nll)?);
                if let Some(aux) = aux {
                    *aux_sum.get_or_insert(0.0) += f64::from(scalar(&aux)?) * f64::from(n);
                }
            }
            let lr = learning_rate(idx, o.lr, o.min_lr, o.warmup, o.steps, o.schedule);
            let want_norm = o.clip_grad_norm > 0.0
                || (o.grad_norm_every > 0 && idx.is_multiple_of(o.grad_norm_every));
            if let (Some(fz), Opt::F32(adam)) = (fused.as_mut(), &mut opt)
                && !gsum.is_empty()
            {
                let params = model.trainable_arrays();
                let inv = (1.0 / ntok.max(1.0)) as f32;
                let update = fz.step(adam, &params, &gsum, inv, lr, want_norm)?;
                let mut ev: Vec<&Array> = update.arrays().collect();
                if let Some((nll, aux, _)) = &pending {
                    ev.push(nll);
                    ev.extend(aux.as_ref());
                }
                // Queue this step, then finish the previous one while the
                // device runs it.
                mlx_rs::transforms::async_eval(ev)?;
                let step = InFlight {
                    idx,
                    update,
                    before: params,
                    adam_before: None,
                    pending,
                    loss_sum,
                    aux_sum,
                    ntok,
                    tokens,
                    lr,
                    want_norm,
                    micro_after: st.micro,
                };
                if let Some(prev) = in_flight.take() {
                    land!(self, prev);
                }
                let mut step = step;
                if let Opt::F32(adam) = &mut opt {
                    step.adam_before = Some(step.update.install(adam));
                }
                for (k, v) in &step.update.params {
                    model.set_trainable_array(k, v)?;
                }
                if o.overlap_steps {
                    in_flight = Some(step);
                } else {
                    land!(self, step);
                }
                continue;
            }
            // Not fused (or a step without counted tokens): land a queued
            // step first, so steps finish in order.
            if let Some(prev) = in_flight.take() {
                land!(self, prev);
            }
            if let Some((nll, aux, n)) = pending.take() {
                loss_sum += f64::from(scalar(&nll)?);
                if let Some(aux) = aux {
                    *aux_sum.get_or_insert(0.0) += f64::from(scalar(&aux)?) * f64::from(n);
                }
            }
            let loss = (loss_sum / ntok.max(1.0)) as f32;
            let inv = Array::from_f32((1.0 / ntok.max(1.0)) as f32);
            let mut grads = BTreeMap::new();
            for (k, v) in gsum {
                grads.insert(k, v.multiply(&inv)?);
            }
            let grad_norm = if want_norm {
                global_norm(&grads)?
            } else {
                f32::NAN
            };
            if grad_norm.is_finite() && o.clip_grad_norm > 0.0 && grad_norm > o.clip_grad_norm {
                let s = Array::from_f32(o.clip_grad_norm / grad_norm);
                for v in grads.values_mut() {
                    *v = v.multiply(&s)?;
                }
            }
            let params = model.trainable_arrays();
            let new = opt.step(&params, &grads, lr)?;
            // The new parameters are installed only after the guard passed.
            let measured = want_norm.then_some(grad_norm);
            if let Some(reason) = divergence(loss, measured, st.ema, st.step, &o) {
                return Err(Error::Diverged {
                    step: idx + 1,
                    reason,
                    checkpoint: last_checkpoint.clone(),
                });
            }
            for (k, v) in &new {
                model.set_trainable_array(k, v)?;
            }
            self.finish_step(
                model,
                &o,
                valid,
                pad,
                &mut st,
                &opt,
                &mut last_checkpoint,
                &mut metrics_file,
                &mut report,
                StepDone {
                    t0,
                    t_run,
                    start_step,
                    loss,
                    lr,
                    grad_norm,
                    tokens,
                    aux: aux_sum.map(|a| (a / ntok.max(1.0)) as f32),
                },
            )?;
            last_done = Instant::now();
        }
        if let Some(prev) = in_flight.take() {
            land!(self, prev);
        }
        Ok(TrainReport {
            steps: report,
            last_checkpoint,
        })
    }
}

/// Why a step with this loss and gradient norm diverged, if it did: a
/// non-finite loss, a loss spike above `spike_factor` times the running mean
/// (after `spike_warmup` steps), or a non-finite gradient norm (when it
/// was measured).
fn divergence(
    loss: f32,
    grad_norm: Option<f32>,
    ema: Option<f64>,
    step: usize,
    o: &TrainOptions,
) -> Option<String> {
    if !loss.is_finite() {
        return Some(format!("the loss is {loss}"));
    }
    if let Some(ema) = ema
        && step >= o.spike_warmup
        && f64::from(loss) > f64::from(o.spike_factor) * ema
    {
        return Some(format!(
            "the loss {loss:.4} is above {}× its running mean {ema:.4}",
            o.spike_factor
        ));
    }
    if let Some(g) = grad_norm
        && !g.is_finite()
    {
        return Some(format!("the gradient norm is {g}"));
    }
    None
}

/// A compiled, fused step that was queued on the device (`async_eval`) and
/// whose parameters are installed, but whose loss was not read yet.
///
/// MLX's host-side work for a step (building and dispatching a few
/// thousand operations) is a large share of a GPU step; reading step n's
/// loss before building step n+1 leaves the device idle for all of it. So
/// step n+1 is built from step n's (lazy) parameters and queued first, and
/// step n is landed after: loss and norm read, the divergence guard, the
/// metrics, evaluation and checkpoint. A diverged step is undone (its
/// parameters and the optimizer's moments restored) and the queued next
/// step is dropped, so the guard's contract is the same as unpipelined.
struct InFlight {
    idx: usize,
    update: FusedStep,
    before: BTreeMap<String, Array>,
    adam_before: Option<AdamState>,
    pending: Option<(Array, Option<Array>, f32)>,
    loss_sum: f64,
    aux_sum: Option<f64>,
    ntok: f64,
    tokens: usize,
    lr: f32,
    want_norm: bool,
    /// The micro-batch counter after this step's batches (what its
    /// checkpoint must record, although the next step's batches are drawn).
    micro_after: u64,
}

/// What one optimizer step produced, for [`Trainer::finish_step`].
struct StepDone {
    t0: Instant,
    t_run: Instant,
    start_step: usize,
    loss: f32,
    lr: f32,
    grad_norm: f32,
    tokens: usize,
    aux: Option<f32>,
}

/// The JSONL metrics file and its path.
type MetricsFile = Option<(std::fs::File, PathBuf)>;

impl Trainer {
    /// Finishes an [`InFlight`] step: reads its loss and norm, applies the
    /// divergence guard (undoing the step on failure), then the usual
    /// bookkeeping with the counters the step ended with.
    #[allow(clippy::too_many_arguments)]
    fn land<M: Trainable + ?Sized>(
        &mut self,
        step: InFlight,
        model: &mut M,
        o: &TrainOptions,
        valid: &[Example],
        pad: u32,
        st: &mut State,
        opt: &mut Opt,
        last_checkpoint: &mut Option<PathBuf>,
        metrics_file: &mut MetricsFile,
        report: &mut Vec<StepMetrics>,
        (last_done, t_run, start_step): (&mut Instant, Instant, usize),
    ) -> Result<()> {
        let InFlight {
            idx,
            update,
            before,
            adam_before,
            pending,
            mut loss_sum,
            mut aux_sum,
            ntok,
            tokens,
            lr,
            want_norm,
            micro_after,
        } = step;
        if let Some((nll, aux, n)) = pending {
            loss_sum += f64::from(scalar(&nll)?);
            if let Some(aux) = aux {
                *aux_sum.get_or_insert(0.0) += f64::from(scalar(&aux)?) * f64::from(n);
            }
        }
        let loss = (loss_sum / ntok.max(1.0)) as f32;
        let grad_norm = match &update.norm {
            Some(n) => scalar(n)?,
            None => f32::NAN,
        };
        if let Some(reason) = divergence(loss, want_norm.then_some(grad_norm), st.ema, idx, o) {
            for (k, v) in &before {
                model.set_trainable_array(k, v)?;
            }
            if let (Opt::F32(adam), Some((t, m, v))) = (opt, adam_before) {
                adam.t = t;
                adam.m = m;
                adam.v = v;
            }
            return Err(Error::Diverged {
                step: idx + 1,
                reason,
                checkpoint: last_checkpoint.clone(),
            });
        }
        // The model holds this step's parameters and the optimizer its
        // moments; only the micro-batch counter has moved on.
        let micro_now = std::mem::replace(&mut st.micro, micro_after);
        let done = self.finish_step(
            model,
            o,
            valid,
            pad,
            st,
            opt,
            last_checkpoint,
            metrics_file,
            report,
            StepDone {
                t0: *last_done,
                t_run,
                start_step,
                loss,
                lr,
                grad_norm,
                tokens,
                aux: aux_sum.map(|a| (a / ntok.max(1.0)) as f32),
            },
        );
        st.micro = micro_now;
        *last_done = Instant::now();
        done
    }

    /// Bookkeeping after the parameters of a step were updated: state,
    /// metrics, evaluation, the metrics line, the checkpoint, the callback.
    #[allow(clippy::too_many_arguments)]
    fn finish_step<M: Trainable + ?Sized>(
        &mut self,
        model: &mut M,
        o: &TrainOptions,
        valid: &[Example],
        pad: u32,
        st: &mut State,
        opt: &Opt,
        last_checkpoint: &mut Option<PathBuf>,
        metrics_file: &mut MetricsFile,
        report: &mut Vec<StepMetrics>,
        d: StepDone,
    ) -> Result<()> {
        let StepDone {
            t0,
            t_run,
            start_step,
            loss,
            lr,
            grad_norm,
            tokens,
            aux,
        } = d;
        st.step += 1;
        st.adam_t = opt.t();
        st.tokens_seen += tokens as u64;
        st.ema = Some(match st.ema {
            Some(e) => 0.9 * e + 0.1 * f64::from(loss),
            None => f64::from(loss),
        });
        let dt = t0.elapsed().as_secs_f64();
        let done = st.step - start_step;
        let remaining = o.steps - st.step;
        let mut m = StepMetrics {
            step: st.step,
            steps: o.steps,
            loss,
            lr,
            grad_norm,
            tokens,
            tokens_per_s: tokens as f64 / dt.max(1e-9),
            peak_memory: mlx_rs::memory::peak_memory().unwrap_or(0),
            peak_rss: peak_rss(),
            optimizer_bytes: opt.state_bytes(),
            eta_s: t_run.elapsed().as_secs_f64() / done as f64 * remaining as f64,
            val_loss: None,
            aux_loss: aux,
        };
        if o.eval_every > 0 && st.step.is_multiple_of(o.eval_every) && !valid.is_empty() {
            m.val_loss = Some(Self::evaluate(
                model,
                valid,
                o.batch_size,
                o.eval_batches,
                pad,
            )?);
        }
        if let Some((f, p)) = metrics_file.as_mut() {
            let mut line = serde_json::to_value(&m).map_err(|e| Error::Json {
                path: p.clone(),
                message: e.to_string(),
            })?;
            if let Some(v) = m.val_loss {
                line["val_ppl"] = json!(f64::from(v).exp());
            }
            writeln!(f, "{line}").map_err(|e| Error::io(p.clone(), e))?;
        }
        if o.save_every > 0
            && st.step.is_multiple_of(o.save_every)
            && let Some(dir) = &o.output_dir
        {
            *last_checkpoint = Some(save_checkpoint(model, opt, st, dir)?);
        }
        if let Some(cb) = self.progress.as_mut() {
            cb(&m);
        }
        report.push(m);
        Ok(())
    }
}

fn save_checkpoint<M: Trainable + ?Sized>(
    model: &M,
    opt: &Opt,
    st: &State,
    out: &Path,
) -> Result<PathBuf> {
    let root = out.join("checkpoints");
    let name = format!("step-{:06}", st.step);
    let fin = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    write_tensors(
        &tmp.join("adapters.safetensors"),
        &model.trainable_arrays(),
        None,
    )?;
    opt.save(&tmp.join("optimizer.safetensors"))?;
    let state = serde_json::to_vec_pretty(st).map_err(|e| Error::Json {
        path: tmp.join("state.json"),
        message: e.to_string(),
    })?;
    write_atomic(&tmp.join("state.json"), &state)?;
    let _ = std::fs::remove_dir_all(&fin);
    std::fs::rename(&tmp, &fin).map_err(|e| Error::io(&fin, e))?;
    write_atomic(&root.join("latest"), name.as_bytes())?;
    Ok(fin)
}

/// The newest complete checkpoint under a run directory, if any.
pub fn latest_checkpoint(output_dir: &Path) -> Option<PathBuf> {
    let root = output_dir.join("checkpoints");
    let name = std::fs::read_to_string(root.join("latest")).ok()?;
    let p = root.join(name.trim());
    p.join("state.json").exists().then_some(p)
}

fn load_checkpoint<M: Trainable + ?Sized>(
    model: &mut M,
    opt: &mut Opt,
    dir: &Path,
) -> Result<State> {
    let sp = dir.join("state.json");
    let text = std::fs::read_to_string(&sp).map_err(|e| Error::io(&sp, e))?;
    let st: State = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: sp.clone(),
        message: e.to_string(),
    })?;
    let ap = dir.join("adapters.safetensors");
    let adapters = read_tensors(&ap)?;
    let expected = model.trainable_arrays();
    for k in expected.keys() {
        if !adapters.contains_key(k) {
            return Err(Error::Safetensors {
                path: ap,
                message: format!(
                    "missing tensor `{k}` (was the checkpoint made with another adapter config?)"
                ),
            });
        }
    }
    for (k, v) in &adapters {
        model.set_trainable_array(k, v)?;
    }
    opt.load(&dir.join("optimizer.safetensors"))?;
    opt.set_t(st.adam_t);
    Ok(st)
}
