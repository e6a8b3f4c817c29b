//! Gradient checkpointing through MLX's `checkpoint` transform.
//!
//! Chen, Xu, Zhang & Guestrin 2016, *Training Deep Nets with Sublinear Memory
//! Cost* (arXiv:1604.06174): for a block `y = f(x, θ)` only the inputs are kept
//! for the backward pass, which recomputes `f` to get the vector-Jacobian
//! product
//!
//! ```text
//! (∂L/∂x, ∂L/∂θ) = vjp_f(x, θ; ∂L/∂y)      with f re-run from (x, θ)
//! ```
//!
//! so a block's activations live only while its own gradient is computed: peak
//! activation memory falls from `O(L)` blocks to `O(1)` block plus the `L`
//! block inputs, for about one extra forward pass of compute.
//!
//! mlx-rs 0.33 does not wrap `mlx_checkpoint` (mlx-c 0.33 / MLX 0.32), so this
//! module calls it through `mlx-sys`: the Rust closure becomes an `mlx_closure`
//! (payload freed by MLX when the last copy of the closure dies, which may be
//! after this call returns: the graph keeps it for the backward pass), MLX
//! wraps it as a custom-VJP function, and the result is applied to the inputs.
//! Everything the gradient must reach has to be an explicit input (captured
//! arrays are constants to MLX).

use std::cell::RefCell;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use mlx_rs::Array;
use mlx_sys as sys;

use crate::error::{Error, Result};

/// A block function: inputs to outputs.
pub(crate) type BlockFn = Box<dyn FnMut(&[Array]) -> Result<Vec<Array>>>;

thread_local! {
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn vector_values(v: sys::mlx_vector_array) -> Vec<Array> {
    // SAFETY: `v` is a live vector; each `get` hands back a new reference that
    // `Array::from_ptr` takes ownership of.
    unsafe {
        let n = sys::mlx_vector_array_size(v);
        (0..n)
            .map(|i| {
                let mut a = sys::mlx_array_new();
                sys::mlx_vector_array_get(&mut a, v, i);
                Array::from_ptr(a)
            })
            .collect()
    }
}

fn new_vector(arrays: &[Array]) -> sys::mlx_vector_array {
    // SAFETY: appending live arrays (MLX takes its own references).
    unsafe {
        let v = sys::mlx_vector_array_new();
        for a in arrays {
            sys::mlx_vector_array_append_value(v, a.as_ptr());
        }
        v
    }
}

extern "C" fn trampoline(
    ret: *mut sys::mlx_vector_array,
    input: sys::mlx_vector_array,
    payload: *mut c_void,
) -> i32 {
    let run = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `payload` is the `Box<BlockFn>` made in `checkpointed`, alive
        // until `drop_payload` runs.
        let f = unsafe { &mut *(payload as *mut BlockFn) };
        f(&vector_values(input))
    }));
    let message = match run {
        Ok(Ok(out)) => {
            // SAFETY: MLX passes a valid out-pointer.
            unsafe { *ret = new_vector(&out) };
            return 0;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "the checkpointed block panicked".to_string(),
    };
    LAST_ERROR.with(|l| *l.borrow_mut() = Some(message));
    1
}

extern "C" fn drop_payload(payload: *mut c_void) {
    if !payload.is_null() {
        // SAFETY: made by `Box::into_raw` in `checkpointed`, dropped once.
        drop(unsafe { Box::from_raw(payload as *mut BlockFn) });
    }
}

/// Applies `f` to `inputs` under MLX's `checkpoint` transform: outside a
/// gradient transform it is just `f(inputs)`; inside one, the backward pass
/// recomputes `f` instead of keeping its intermediate arrays.
pub(crate) fn checkpointed(f: BlockFn, inputs: &[Array]) -> Result<Vec<Array>> {
    let payload = Box::into_raw(Box::new(f)) as *mut c_void;
    // SAFETY: plain mlx-c calls on handles created here and freed below; the
    // payload's ownership moves to the closure (freed through `drop_payload`).
    unsafe {
        let fun = sys::mlx_closure_new_func_payload(Some(trampoline), payload, Some(drop_payload));
        let mut ck = sys::mlx_closure_new();
        let status = sys::mlx_checkpoint(&mut ck, fun);
        sys::mlx_closure_free(fun);
        if status != 0 {
            sys::mlx_closure_free(ck);
            return Err(Error::Unsupported("mlx_checkpoint failed".into()));
        }
        apply(
            ck,
            inputs,
            "gradient checkpointing",
            "MLX refused the checkpointed block",
        )
    }
}

/// Applies the transformed closure `wrapped` to `inputs` and frees it; a
/// failure carries the Rust closure's own error when it raised one.
///
/// # Safety
/// `wrapped` must be a live closure made by an mlx-c transform; it is freed
/// here.
unsafe fn apply(
    wrapped: sys::mlx_closure,
    inputs: &[Array],
    what: &str,
    fallback: &str,
) -> Result<Vec<Array>> {
    // SAFETY: the caller hands over a live closure; the vectors are created
    // and freed here.
    unsafe {
        let args = new_vector(inputs);
        let mut out = sys::mlx_vector_array_new();
        let status = sys::mlx_closure_apply(&mut out, wrapped, args);
        sys::mlx_vector_array_free(args);
        sys::mlx_closure_free(wrapped);
        if status != 0 {
            sys::mlx_vector_array_free(out);
            let msg = LAST_ERROR
                .with(|l| l.borrow_mut().take())
                .unwrap_or_else(|| fallback.to_string());
            return Err(Error::Unsupported(format!("{what}: {msg}")));
        }
        let values = vector_values(out);
        sys::mlx_vector_array_free(out);
        Ok(values)
    }
}

/// A custom vector-Jacobian product: `(primals, cotangents, outputs)` to one
/// cotangent per primal.
pub(crate) type VjpFn = Box<dyn FnMut(&[Array], &[Array], &[Array]) -> Result<Vec<Array>>>;

extern "C" fn vjp_trampoline(
    ret: *mut sys::mlx_vector_array,
    primals: sys::mlx_vector_array,
    cotangents: sys::mlx_vector_array,
    outputs: sys::mlx_vector_array,
    payload: *mut c_void,
) -> i32 {
    let run = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `payload` is the `Box<VjpFn>` made in `custom_vjp`, alive
        // until `drop_vjp_payload` runs.
        let f = unsafe { &mut *(payload as *mut VjpFn) };
        f(
            &vector_values(primals),
            &vector_values(cotangents),
            &vector_values(outputs),
        )
    }));
    let message = match run {
        Ok(Ok(out)) => {
            // SAFETY: MLX passes a valid out-pointer.
            unsafe { *ret = new_vector(&out) };
            return 0;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "the custom gradient panicked".to_string(),
    };
    LAST_ERROR.with(|l| *l.borrow_mut() = Some(message));
    1
}

extern "C" fn drop_vjp_payload(payload: *mut c_void) {
    if !payload.is_null() {
        // SAFETY: made by `Box::into_raw` in `custom_vjp`, dropped once.
        drop(unsafe { Box::from_raw(payload as *mut VjpFn) });
    }
}

/// Applies `f` to `inputs` as a function whose gradient is `vjp` (MLX's
/// `custom_vjp` transform): MLX differentiates through it by calling `vjp`
/// with the primals, the output cotangents and the outputs `f` produced,
/// instead of through `f`'s own graph. Captured arrays are constants.
pub(crate) fn custom_vjp(f: BlockFn, vjp: VjpFn, inputs: &[Array]) -> Result<Vec<Array>> {
    let fwd_payload = Box::into_raw(Box::new(f)) as *mut c_void;
    let vjp_payload = Box::into_raw(Box::new(vjp)) as *mut c_void;
    // SAFETY: plain mlx-c calls on handles created here and freed below; both
    // payloads' ownership moves to their closures (freed through the
    // destructors given).
    unsafe {
        let fun =
            sys::mlx_closure_new_func_payload(Some(trampoline), fwd_payload, Some(drop_payload));
        let fun_vjp = sys::mlx_closure_custom_new_func_payload(
            Some(vjp_trampoline),
            vjp_payload,
            Some(drop_vjp_payload),
        );
        let mut wrapped = sys::mlx_closure_new();
        let status = sys::mlx_custom_vjp(&mut wrapped, fun, fun_vjp);
        sys::mlx_closure_free(fun);
        sys::mlx_closure_custom_free(fun_vjp);
        if status != 0 {
            sys::mlx_closure_free(wrapped);
            return Err(Error::Unsupported("mlx_custom_vjp failed".into()));
        }
        apply(
            wrapped,
            inputs,
            "custom gradient",
            "MLX refused the custom-gradient function",
        )
    }
}
