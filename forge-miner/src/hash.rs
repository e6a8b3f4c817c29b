//! Stable hashing: FNV-1a 64 (Fowler–Noll–Vo) and the SplitMix64 finaliser.
//!
//! Both are fixed, platform-independent functions of the input bytes, so every
//! hash written by the miner (unit hashes, ids, split assignment) is the same on
//! every run and every machine.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`: `h = (h ^ b) * 0x100000001b3` from `h = 0xcbf29ce484222325`.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(FNV_OFFSET, bytes)
}

/// FNV-1a 64 continuing from state `h`.
pub(crate) fn fnv1a_from(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// FNV-1a 64 over several fields, each followed by a 0xff separator byte (which
/// never occurs in UTF-8), so `("ab","c")` and `("a","bc")` differ.
pub(crate) fn fnv1a_fields(fields: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for f in fields {
        h = fnv1a_from(h, f);
        h = fnv1a_from(h, &[0xff]);
    }
    h
}

/// SplitMix64's output function (Steele et al., 2014): a bijective 64-bit mixer.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 16 lowercase hex digits.
pub(crate) fn hex(h: u64) -> String {
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_values() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fields_are_separated() {
        assert_ne!(fnv1a_fields(&[b"ab", b"c"]), fnv1a_fields(&[b"a", b"bc"]));
    }
}
