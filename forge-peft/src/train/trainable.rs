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
    let mut values = values.into_iter();
    let first = values
        .next()
        .ok_or_else(|| Error::Unsupported("empty loss".into()))?;
    let (nll, aux) = match (values.next(), values.next()) {
        (Some(nll), Some(aux)) => (nll, Some(aux)),
        _ => (first, None),
    };
    Ok(LossGrad {
        nll,
        aux,
        grads: grads.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    })
}
