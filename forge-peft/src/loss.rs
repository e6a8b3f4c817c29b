//! Masked next-token cross-entropy and its gradient with respect to the
//! adapter parameters.
//!
//! `L = Σ_t m_t (logsumexp(z_t) − z_t[y_t])` summed over the positions whose
//! mask `m_t` is 1 (prompt tokens and padding are 0); the trainer divides the
//! accumulated sum and gradients by the number of counted tokens, so gradient
//! accumulation over micro-batches equals one large batch exactly.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use mlx_rs::Array;
use mlx_rs::error::Exception;

use crate::error::Result;
use crate::model::PeftModel;

/// Summed masked cross-entropy of `logits` `[b, l, v]` against `targets`
/// `[b, l]` (int32) under `mask` `[b, l]` (f32, 0 or 1).
pub fn masked_nll_sum(logits: &Array, targets: &Array, mask: &Array) -> Result<Array> {
    let logits = logits.as_type::<f32>()?;
    let lse = logits.logsumexp_axis(-1, false)?;
    let picked = logits
        .take_along_axis(targets.expand_dims(-1)?, -1)?
        .squeeze_axes(&[-1])?;
    Ok(lse.subtract(&picked)?.multiply(mask)?.sum(None)?)
}

/// Rows of the output projection computed at a time in the loss (the
/// `[rows, vocab]` logits of one chunk: 1024 × 49,152 f32 = 201 MB for SmolLM2).
pub const HEAD_CHUNK: usize = 1024;

/// The flattened positions whose mask is set (int32) and their targets.
fn counted_rows(batch: &Batch) -> Result<(Array, Array)> {
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

/// One batch: inputs, targets and loss mask, each `[b, l]`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Input ids (int32).
    pub inputs: Array,
    /// Next-token targets (int32).
    pub targets: Array,
    /// 1 where the target counts in the loss, 0 elsewhere (f32).
    pub mask: Array,
}

impl Batch {
    /// Number of counted targets.
    pub fn num_tokens(&self) -> Result<f32> {
        let s = self.mask.sum(None)?;
        s.eval()?;
        Ok(s.as_slice::<f32>()[0])
    }
}

/// The summed loss of `batch` and its gradient for every trainable adapter
/// array (by name).
pub fn loss_and_grad(
    model: &mut PeftModel,
    batch: &Batch,
) -> Result<(Array, BTreeMap<String, Array>)> {
    loss_and_grad_with(model, batch, false)
}

/// [`loss_and_grad`], with gradient checkpointing of the decoder blocks when
/// `checkpoint` is set ([`PeftModel::forward_checkpointed`]).
pub fn loss_and_grad_with(
    model: &mut PeftModel,
    batch: &Batch,
    checkpoint: bool,
) -> Result<(Array, BTreeMap<String, Array>)> {
    let params: HashMap<Rc<str>, Array> = model
        .trainable_parameters()
        .into_iter()
        .map(|(k, v)| (Rc::from(k.as_str()), v))
        .collect();
    let originals = params.clone();
    let (rows, picked) = counted_rows(batch)?;
    let f = |p: HashMap<Rc<str>, Array>,
             b: (Array, Array, Array)|
     -> std::result::Result<Vec<Array>, Exception> {
        let mut run = || -> Result<Array> {
            model.set_trainable_map(&p)?;
            let h = model.hidden(&b.0, checkpoint)?;
            model.selected_nll_sum(&h, &rows, &picked, HEAD_CHUNK)
        };
        run().map(|l| vec![l]).map_err(|e| match e {
            crate::Error::Mlx(e) => e,
            other => Exception::custom(other.to_string()),
        })
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
    model.set_trainable_map(&originals)?;
    let (values, grads) = out?;
    let loss = values
        .into_iter()
        .next()
        .ok_or_else(|| crate::Error::Unsupported("empty loss".into()))?;
    Ok((
        loss,
        grads.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    ))
}
