//! Names the controllers derive from content: stable on every leader and across builds, so a
//! decision made twice names the same object.

/// The letters of generated names (Kubernetes': no vowels, no look-alikes).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a over `parts`, each followed by a zero byte (so `["ab", "c"]` and `["a", "bc"]` differ).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for part in parts {
        for byte in part.iter().copied().chain([0u8]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x100000001b3);
        }
    }
    hash
}

/// `len` letters of [`ALPHABET`] spelling `seed`.
pub fn spell(seed: u64, len: usize) -> String {
    let base = ALPHABET.len() as u64;
    let mut n = seed;
    (0..len)
        .map(|_| {
            let c = ALPHABET[(n % base) as usize] as char;
            n /= base;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_separate_their_parts() {
        assert_eq!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"ab", b"c"]));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert_eq!(spell(0, 5), "bbbbb");
        assert_eq!(spell(fnv1a(&[b"x"]), 10).len(), 10);
    }
}
