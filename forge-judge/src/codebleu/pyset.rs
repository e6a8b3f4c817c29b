//! The iteration order of `list(set(names))` in CPython 3.11 with `PYTHONHASHSEED=0`.
//!
//! codebleu merges dataflow edges with `list(set(a + b))`, so the order of parent names, and
//! with it the normalised dataflow it compares, follows CPython's string hash (SipHash-1-3 with
//! a zero key when the seed is 0) and its set table (open addressing, 9 linear probes, then
//! perturbation; resize to 4x used when 60% full). This module reproduces both.

fn siphash13(data: &[u8]) -> u64 {
    let (k0, k1) = (0u64, 0u64);
    let mut v0 = k0 ^ 0x736f_6d65_7073_6575;
    let mut v1 = k1 ^ 0x646f_7261_6e64_6f6d;
    let mut v2 = k0 ^ 0x6c79_6765_6e65_7261;
    let mut v3 = k1 ^ 0x7465_6462_7974_6573;
    macro_rules! round {
        () => {
            v0 = v0.wrapping_add(v1);
            v1 = v1.rotate_left(13);
            v1 ^= v0;
            v0 = v0.rotate_left(32);
            v2 = v2.wrapping_add(v3);
            v3 = v3.rotate_left(16);
            v3 ^= v2;
            v0 = v0.wrapping_add(v3);
            v3 = v3.rotate_left(21);
            v3 ^= v0;
            v2 = v2.wrapping_add(v1);
            v1 = v1.rotate_left(17);
            v1 ^= v2;
            v2 = v2.rotate_left(32);
        };
    }
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let m = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        v3 ^= m;
        round!();
        v0 ^= m;
    }
    let mut b = (data.len() as u64) << 56;
    for (i, &byte) in chunks.remainder().iter().enumerate() {
        b |= u64::from(byte) << (8 * i);
    }
    v3 ^= b;
    round!();
    v0 ^= b;
    v2 ^= 0xff;
    round!();
    round!();
    round!();
    v0 ^ v1 ^ v2 ^ v3
}

/// `hash(s)` of CPython 3.11 with `PYTHONHASHSEED=0`.
pub(crate) fn py_str_hash(s: &str) -> i64 {
    if s.is_empty() {
        return 0;
    }
    // CPython hashes the compact representation: 1, 2 or 4 bytes per code point (ASCII:
    // the UTF-8 bytes themselves).
    if s.is_ascii() {
        let h = siphash13(s.as_bytes()) as i64;
        return if h == -1 { -2 } else { h };
    }
    let max = s.chars().map(|c| c as u32).max().unwrap_or(0);
    let bytes: Vec<u8> = if max < 0x100 {
        s.chars().map(|c| c as u32 as u8).collect()
    } else if max < 0x10000 {
        s.chars()
            .flat_map(|c| (c as u32 as u16).to_ne_bytes())
            .collect()
    } else {
        s.chars().flat_map(|c| (c as u32).to_ne_bytes()).collect()
    };
    let h = siphash13(&bytes) as i64;
    if h == -1 { -2 } else { h }
}

const LINEAR_PROBES: usize = 9;
const PERTURB_SHIFT: u32 = 5;

fn insert_clean(table: &mut [Option<(i64, usize)>], mask: usize, hash: i64, item: usize) {
    let mut perturb = hash as u64;
    let mut i = (hash as u64 as usize) & mask;
    loop {
        if table[i].is_none() {
            table[i] = Some((hash, item));
            return;
        }
        if i + LINEAR_PROBES <= mask {
            for j in 1..=LINEAR_PROBES {
                if table[i + j].is_none() {
                    table[i + j] = Some((hash, item));
                    return;
                }
            }
        }
        perturb >>= PERTURB_SHIFT;
        i = (i
            .wrapping_mul(5)
            .wrapping_add(1)
            .wrapping_add(perturb as usize))
            & mask;
    }
}

/// `list(set(items))` for strings, in CPython's order.
#[cfg(test)]
pub(crate) fn list_set<S: AsRef<str> + Clone>(items: &[S]) -> Vec<S> {
    let hashes: Vec<i64> = items.iter().map(|s| py_str_hash(s.as_ref())).collect();
    list_set_hashed(
        items.len(),
        |i| hashes[i],
        |a, b| items[a].as_ref() == items[b].as_ref(),
    )
    .into_iter()
    .map(|i| items[i].clone())
    .collect()
}

/// `list(set(items))` over `n` items given by index, with their CPython `hash` and equality:
/// the indices of the items the set keeps (the first of equal ones), in the set's iteration
/// order.
pub(crate) fn list_set_hashed(
    n: usize,
    hash_of: impl Fn(usize) -> i64,
    equal: impl Fn(usize, usize) -> bool,
) -> Vec<usize> {
    let mut table: Vec<Option<(i64, usize)>> = vec![None; 8];
    let mut mask = 7usize;
    let mut used = 0usize;
    for idx in 0..n {
        let hash = hash_of(idx);
        // set_add_entry: probe for an equal key or a free slot (no deletions, so no dummies).
        let mut perturb = hash as u64;
        let mut i = (hash as u64 as usize) & mask;
        let slot = 'probe: loop {
            let probes = if i + LINEAR_PROBES <= mask {
                LINEAR_PROBES
            } else {
                0
            };
            for j in 0..=probes {
                match table[i + j] {
                    None => break 'probe Some(i + j),
                    Some((h, k)) if h == hash && equal(k, idx) => {
                        break 'probe None;
                    }
                    Some(_) => {}
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = (i
                .wrapping_mul(5)
                .wrapping_add(1)
                .wrapping_add(perturb as usize))
                & mask;
        };
        if let Some(slot) = slot {
            table[slot] = Some((hash, idx));
            used += 1;
            if used * 5 >= mask * 3 {
                let minused = if used > 50_000 { used * 2 } else { used * 4 };
                let mut size = 8;
                while size <= minused {
                    size <<= 1;
                }
                let old = std::mem::replace(&mut table, vec![None; size]);
                mask = size - 1;
                for (h, k) in old.into_iter().flatten() {
                    insert_clean(&mut table, mask, h, k);
                }
            }
        }
    }
    table.into_iter().flatten().map(|(_, k)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_cpython_seed_0() {
        // PYTHONHASHSEED=0 python3.11 -c "print(hash('abc'), hash('a'))"
        assert_eq!(py_str_hash("abc"), -4594863902769663758);
        assert_eq!(py_str_hash("a"), 4644417185603328019);
        assert_eq!(py_str_hash(""), 0);
        // ASCII (hashed as its UTF-8 bytes) and the 1/2/4-byte forms of wider text:
        // PYTHONHASHSEED=0 python3.11 -c "print(hash('total'), hash('café'), hash('日本'), hash('x😀'))"
        assert_eq!(py_str_hash("total"), 650888591713184603);
        assert_eq!(py_str_hash("café"), 137524001917817222);
        assert_eq!(py_str_hash("日本"), 6243316497235261705);
        assert_eq!(py_str_hash("x😀"), -4086645887891144435);
    }

    #[test]
    fn set_order_matches_cpython() {
        let items: Vec<String> = ["x", "y", "z", "total", "i"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(list_set(&items), ["y", "x", "z", "i", "total"]);
    }
}
