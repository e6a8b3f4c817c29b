//! What the trainer needs from an adapted model, and the training loss with
//! an auxiliary term.
//!
//! [`PeftModel`] (one adapter per module) and
//! [`MoeLoraModel`](crate::MoeLoraModel) (routed experts) both implement
//! [`Trainable`]. A model may return an **auxiliary loss** from its training
//! forward ([`Trainable::hidden_with_aux`]): a scalar per counted token
//! (MoELoRA: the experts' contrastive loss plus the router's load-balancing
//! term). The step then minimises
//!
//! ```text
//! L = (Σ_batches [ Σ_t nll_t + n_b · aux_b ]) / Σ_b n_b
//! ```
//!
//! where `n_b` is the number of counted tokens of micro-batch `b`: the
//! auxiliary term is averaged over micro-batches by their token counts, so
//! gradient accumulation still equals one large batch. The reported `loss` is
//! the language-model part alone (comparable with plain LoRA); the auxiliary
//! part is reported as `aux_loss`. Without an auxiliary loss the computation
//! is the one of [`loss_and_grad_with`](crate::loss_and_grad_with), op for op.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use mlx_rs::Array;
use mlx_rs::error::Exception;

use crate::error::{Error, Result};
use crate::loss::{Batch, HEAD_CHUNK};
use crate::model::PeftModel;

/// A model the [`Trainer`](crate::Trainer) can train.
pub trait Trainable {
    /// The trainable arrays by name.
    fn trainable_arrays(&self) -> BTreeMap<String, Array>;

    /// Replaces the trainable array `name` (same shape).
    fn set_trainable_array(&mut self, name: &str, value: &Array) -> Result<()>;

    /// The last decoder block's output `[b, l, d]` (before the final norm)
    /// for token ids `[b, l]`, and the model's auxiliary loss for this
    /// forward (a scalar meant per counted token), if it has one. Called
    /// inside the gradient transform: whatever the auxiliary loss depends
    /// on is differentiated.
    fn hidden_with_aux(
        &mut self,
        tokens: &Array,
        checkpoint: bool,
    ) -> Result<(Array, Option<Array>)>;

    /// The summed next-token loss of the flattened positions `rows` (int32)
    /// against `targets` (int32, one per row).
    fn selected_nll_sum(&mut self, hidden: &Array, rows: &Array, targets: &Array) -> Result<Array>;

    /// Logits `[b, l, vocab]` (evaluation).
    fn logits(&mut self, tokens: &Array) -> Result<Array>;
}

impl Trainable for PeftModel {
    fn trainable_arrays(&self) -> BTreeMap<String, Array> {
        self.trainable_parameters()
    }

    fn set_trainable_array(&mut self, name: &str, value: &Array) -> Result<()> {
        self.set_trainable([(name, value)])
    }

    fn hidden_with_aux(
        &mut self,
        tokens: &Array,
        checkpoint: bool,
    ) -> Result<(Array, Option<Array>)> {
        Ok((self.hidden(tokens, checkpoint)?, None))
    }

    fn selected_nll_sum(&mut self, hidden: &Array, rows: &Array, targets: &Array) -> Result<Array> {
        PeftModel::selected_nll_sum(self, hidden, rows, targets, HEAD_CHUNK)
    }

    fn logits(&mut self, tokens: &Array) -> Result<Array> {
        self.forward(tokens)
    }
}

/// One micro-batch's loss parts and gradients.
#[derive(Debug, Clone)]
pub struct LossGrad {
    /// Summed next-token loss over the counted tokens.
    pub nll: Array,
    /// The auxiliary loss per token (before multiplying by the token count).
    pub aux: Option<Array>,
    /// Gradients of `nll + n·aux` by trainable name.
    pub grads: BTreeMap<String, Array>,
}

/// The flattened positions whose mask is set (int32) and their targets.
pub(crate) fn counted_rows(batch: &Batch) -> Result<(Array, Array)> {
    let mask = batch.mask.as_type::<f32>()?.reshape(&[-1])?;
    let targets = batch.targets.as_type::<i32>()?.reshape(&[-1])?;
    mlx_rs::transforms::eval([&mask, &targets])?;
    let (m, t) = (mask.as_slice::<f32>(), targets.as_slice::<i32>());
    let rows: Vec<i32> = (0..m.len() as i32)
        .filter(|&i| m[i as usize] != 0.0)
        .collect();
    let picked: Vec<i32> = rows.iter().map(|&i| t[i as usize]).collect();
    let n = rows.len() as i32;
    Ok((
        Array::from_slice(&rows, &[n]),
        Array::from_slice(&picked, &[n]),
    ))
}

/// The language-model loss and the auxiliary loss from the step function's
/// values: `[nll]`, or `[nll + n·aux, nll, aux]` for models with an
/// auxiliary loss.
fn loss_parts(values: Vec<Array>) -> Result<(Array, Option<Array>)> {
    let mut values = values.into_iter();
    let first = values
        .next()
        .ok_or_else(|| Error::Unsupported("empty loss".into()))?;
    Ok(match (values.next(), values.next()) {
        (Some(nll), Some(aux)) => (nll, Some(aux)),
        _ => (first, None),
    })
}

fn to_exception(e: Error) -> Exception {
    match e {
        Error::Mlx(e) => e,
        other => Exception::custom(other.to_string()),
    }
}

/// The summed loss of `batch` plus `n · aux` (the model's auxiliary loss
/// times the counted tokens), its parts, and the gradient of the sum for
/// every trainable array.
pub fn loss_and_grad_aux<M: Trainable + ?Sized>(
    model: &mut M,
    batch: &Batch,
    checkpoint: bool,
) -> Result<LossGrad> {
    let params: HashMap<Rc<str>, Array> = model
        .trainable_arrays()
        .into_iter()
        .map(|(k, v)| (Rc::from(k.as_str()), v))
        .collect();
    let originals = params.clone();
    let (rows, picked) = counted_rows(batch)?;
    let count = Array::from_f32(rows.dim(0) as f32);
    let f = |p: HashMap<Rc<str>, Array>,
             b: (Array, Array, Array)|
     -> std::result::Result<Vec<Array>, Exception> {
        let mut run = || -> Result<Vec<Array>> {
            for (k, v) in &p {
                model.set_trainable_array(k, v)?;
            }
            let (h, aux) = model.hidden_with_aux(&b.0, checkpoint)?;
            let nll = model.selected_nll_sum(&h, &rows, &picked)?;
            Ok(match aux {
                None => vec![nll],
                Some(aux) => vec![nll.add(aux.multiply(&count)?)?, nll, aux],
            })
        };
        run().map_err(to_exception)
    };
    let mut vg = mlx_rs::transforms::keyed_value_and_grad(f);
    let out = vg(
        params,
        (
            batch.inputs.clone(),
            batch.targets.clone(),
            batch.mask.clone(),
        ),
    );
    drop(vg);
    // Put the untraced arrays back whatever happened.
    for (k, v) in &originals {
        model.set_trainable_array(k, v)?;
    }
    let (values, grads) = out?;
    let (nll, aux) = loss_parts(values)?;
    Ok(LossGrad {
        nll,
        aux,
        grads: grads.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    })
}

/// The model a [`CompiledLossGrad`] traces through, set only while a call
/// is in progress.
type ModelSlot<M> = std::rc::Rc<std::cell::Cell<Option<std::ptr::NonNull<M>>>>;

/// A compiled function over a slice of arrays (what `mlx_rs::transforms::compile`
/// returns for fallible slice functions).
type CompiledFn = Box<dyn for<'a> FnMut(&'a [Array]) -> std::result::Result<Vec<Array>, Exception>>;

/// [`loss_and_grad_aux`] as one compiled MLX function.
///
/// The forward, the loss and the backward of a micro-batch are traced once
/// per input shape by `mlx_rs::transforms::compile` (MLX `compile`), which
/// merges common work and fuses element-wise chains (SiLU·gate, RoPE,
/// residual adds, the softmax pieces) into generated kernels; later calls
/// with the same shapes replay the optimised graph without rebuilding it.
/// The inputs are the trainable arrays (sorted by name), the token ids, the
/// counted rows, their targets and the counted-token count; the frozen base
/// weights are constants of the traced graph. Outputs match
/// [`loss_and_grad_aux`] to float rounding (fused kernels may reorder
/// nothing but may contract multiply-adds).
pub(crate) struct CompiledLossGrad<M: ?Sized> {
    names: Vec<String>,
    slot: ModelSlot<M>,
    f: CompiledFn,
}

impl<M: Trainable + ?Sized + 'static> CompiledLossGrad<M> {
    /// A compiled step for a model whose trainable arrays are `names`.
    pub(crate) fn new(names: Vec<String>, checkpoint: bool) -> Self {
        let slot: ModelSlot<M> = std::rc::Rc::new(std::cell::Cell::new(None));
        let inner = slot.clone();
        let keys: Vec<Rc<str>> = names.iter().map(|n| Rc::from(n.as_str())).collect();
        let traced = move |xs: &[Array]| -> std::result::Result<Vec<Array>, Exception> {
            let Some(mut ptr) = inner.get() else {
                return Err(Exception::custom(
                    "compiled training step called without a model",
                ));
            };
            // SAFETY: `call` stores a pointer derived from a live `&mut M`
            // into the slot right before invoking the compiled function and
            // clears it right after; MLX only runs this closure
            // synchronously inside that invocation (to trace it), so the
            // pointer is valid and not aliased while it is used here.
            let model: &mut M = unsafe { ptr.as_mut() };
            let k = keys.len();
            if xs.len() != k + 4 {
                return Err(Exception::custom(format!(
                    "compiled training step: {} inputs, expected {}",
                    xs.len(),
                    k + 4
                )));
            }
            let params: HashMap<Rc<str>, Array> =
                keys.iter().cloned().zip(xs[..k].iter().cloned()).collect();
            let (tokens, rows, picked, count) = (&xs[k], &xs[k + 1], &xs[k + 2], &xs[k + 3]);
            let f =
                |p: HashMap<Rc<str>, Array>, _: ()| -> std::result::Result<Vec<Array>, Exception> {
                    let mut run = || -> Result<Vec<Array>> {
                        for (name, v) in &p {
                            model.set_trainable_array(name, v)?;
                        }
                        let (h, aux) = model.hidden_with_aux(tokens, checkpoint)?;
                        let nll = model.selected_nll_sum(&h, rows, picked)?;
                        Ok(match aux {
                            None => vec![nll],
                            Some(aux) => vec![nll.add(aux.multiply(count)?)?, nll, aux],
                        })
                    };
                    run().map_err(to_exception)
                };
            let mut vg = mlx_rs::transforms::keyed_value_and_grad(f);
            let (mut values, mut grads) = vg(params, ())?;
            for key in &keys {
                values.push(grads.remove(key).ok_or_else(|| {
                    Exception::custom(format!("no gradient for trainable array `{key}`"))
                })?);
            }
            Ok(values)
        };
        let f: CompiledFn = Box::new(mlx_rs::transforms::compile::compile(traced, false));
        Self { names, slot, f }
    }

    /// The loss parts and gradients of `batch` (see [`loss_and_grad_aux`]).
    pub(crate) fn call(&mut self, model: &mut M, batch: &Batch) -> Result<LossGrad> {
        let originals = model.trainable_arrays();
        if originals.len() != self.names.len()
            || !self.names.iter().all(|n| originals.contains_key(n))
        {
            return Err(Error::Unsupported(
                "the model's trainable arrays changed after the training step was compiled".into(),
            ));
        }
        let (rows, picked) = counted_rows(batch)?;
        let count = Array::from_f32(rows.dim(0) as f32);
        let mut inputs: Vec<Array> = self.names.iter().map(|n| originals[n].clone()).collect();
        inputs.extend([batch.inputs.clone(), rows, picked, count]);
        self.slot.set(Some(std::ptr::NonNull::from(&mut *model)));
        let out = (self.f)(&inputs);
        self.slot.set(None);
        // Tracing put placeholder arrays into the model: put the real ones back.
        for (k, v) in &originals {
            model.set_trainable_array(k, v)?;
        }
        let mut out = out?;
        let k = self.names.len();
        if out.len() != k + 1 && out.len() != k + 3 {
            return Err(Error::Unsupported(format!(
                "compiled training step returned {} arrays for {k} trainable arrays",
                out.len()
            )));
        }
        let grads_part = out.split_off(out.len() - k);
        let grads = self.names.iter().cloned().zip(grads_part).collect();
        let (nll, aux) = loss_parts(out)?;
        Ok(LossGrad { nll, aux, grads })
    }
}
