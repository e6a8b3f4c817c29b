//! Key/value cache for incremental decoding.
//!
//! Causal attention at position `t` reads the keys and values of positions
//! `0..=t`, which never change once computed; keeping them per layer makes each
//! new token cost one position of projections instead of the whole prefix.

use mlx_rs::Array;

use crate::error::Result;

/// Keys and values of every layer for the positions processed so far.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Array, Array)>>,
    offset: usize,
}

impl KvCache {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            offset: 0,
        }
    }

    /// Number of positions cached (the position of the next token).
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// Forgets every cached position.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.offset = 0;
    }

    /// Appends `keys`/`values` (`[batch, kv_heads, new, head_dim]`) to layer
    /// `layer` and returns the layer's full keys and values.
    pub(crate) fn update(
        &mut self,
        layer: usize,
        keys: Array,
        values: Array,
    ) -> Result<(Array, Array)> {
        let slot = &mut self.layers[layer];
        let (k, v) = match slot.take() {
            None => (keys, values),
            Some((k0, v0)) => (
                mlx_rs::ops::concatenate(&[k0, keys], 2)?,
                mlx_rs::ops::concatenate(&[v0, values], 2)?,
            ),
        };
        *slot = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Advances the position after all layers processed `n` new tokens.
    pub(crate) fn advance(&mut self, n: usize) {
        self.offset += n;
    }

    pub(crate) fn num_layers(&self) -> usize {
        self.layers.len()
    }
}
