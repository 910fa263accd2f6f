//! Assertions of the guarantees: never twice, strictly increasing.

/// Asserts that `numbers` hold no duplicate; returns them sorted.
pub fn assert_unique(what: &str, numbers: &[u64]) -> Vec<u64> {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        assert_ne!(w[0], w[1], "{what}: {} was issued twice", w[0]);
    }
    sorted
}

/// Asserts that a sequence is strictly increasing.
pub fn assert_strictly_increasing(what: &str, numbers: &[u64]) {
    for w in numbers.windows(2) {
        assert!(w[0] < w[1], "{what}: {} came after {}", w[1], w[0]);
    }
}
