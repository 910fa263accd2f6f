//! Which keys may have a row on disk, so that a key that cannot have one
//! is started without reading SQLite.
//!
//! # What it owns
//!
//! A Bloom filter of every key that has, or had, a row in `marks` or in
//! the mark log: the keys on disk when it was built (read by a scan on a
//! thread of its own), and every key the writer committed since (added
//! after the commit, while its mark is still in memory with its write
//! outstanding). It lives in [`HighWaterMarks`] and is read and written
//! under that lock only.
//!
//! # What it guarantees
//!
//! "No row" ([`RowFilter::may_have_row`] false) is certain for every key
//! a `NEXT` can name: for a key with a committed row, either the filter
//! has it or its mark is in memory (a mark whose write is outstanding is
//! not evicted; one that expired is pruned, but only after its day's
//! window closed, when no `NEXT` can name its key). "Maybe" costs what
//! it did without the filter: the row is read. Until the first scan
//! ends, every answer is "maybe".
//!
//! A new filter is built when the current one holds more keys than it
//! was sized for (false positives rise with them): it is created empty
//! before the scan's read transaction begins, so a key committed after
//! that transaction's snapshot is added to it by the writer, and one
//! committed before is in the snapshot. It then replaces the current one.
//! Keys whose rows were pruned stay in a filter until the next build.
//!
//! [`HighWaterMarks`]: super::marks::HighWaterMarks

use foldhash::fast::RandomState;
use std::hash::BuildHasher;

/// Bits per key a filter is sized for: about 1% of absent keys read
/// anyway.
const BITS_PER_KEY: usize = 10;
/// Keys a filter is sized for at least (2.5 MiB; its pages are touched
/// only as keys are added). The store's tests use small filters, so that
/// they are rebuilt under their writes.
#[cfg(not(test))]
pub(super) const MIN_KEYS: usize = 1 << 21;
#[cfg(test)]
pub(super) const MIN_KEYS: usize = 64;

/// A split-block Bloom filter: each key sets one bit in each of the eight
/// words of one 64-byte block, so a lookup reads one block (a cache line,
/// or two: the blocks are zeroed memory from the allocator, aligned to 8
/// bytes, so that untouched pages cost nothing).
struct Bloom {
    blocks: Vec<[u64; 8]>,
    added: usize,
    capacity: usize,
}

impl Bloom {
    fn with_capacity(keys: usize) -> Bloom {
        let blocks = (keys * BITS_PER_KEY).div_ceil(512).max(1);
        Bloom {
            // Zeroed memory: pages are mapped as they are first written.
            blocks: vec![[0u64; 8]; blocks],
            added: 0,
            capacity: keys,
        }
    }

    /// The block of `hash`, and the bit it sets in each word.
    fn probe(&self, hash: u64) -> (usize, [u64; 8]) {
        let block = ((u128::from(hash) * self.blocks.len() as u128) >> 64) as usize;
        // The bits from a remix of the hash, independent of the block.
        let mut x = hash ^ (hash >> 32);
        x = x.wrapping_mul(0xd6e8_feb8_6659_fd93);
        x ^= x >> 32;
        let mut bits = [0u64; 8];
        for (i, b) in bits.iter_mut().enumerate() {
            *b = 1 << ((x >> (i * 6)) & 63);
        }
        (block, bits)
    }

    /// Counts a key only when it set a bit: a hot key written again and
    /// again does not fill the filter.
    fn insert(&mut self, hash: u64) {
        let (block, bits) = self.probe(hash);
        let mut new = false;
        for (w, b) in self.blocks[block].iter_mut().zip(bits) {
            new |= *w & b == 0;
            *w |= b;
        }
        self.added += usize::from(new);
    }

    fn contains(&self, hash: u64) -> bool {
        let (block, bits) = self.probe(hash);
        self.blocks[block].iter().zip(bits).all(|(w, b)| w & b != 0)
    }
}

/// The filter in use, and the one being built.
pub(super) struct RowFilter {
    hasher: RandomState,
    current: Option<Bloom>,
    next: Option<Bloom>,
    /// A build was started and has not ended.
    building: bool,
    /// Keys a filter is sized for at least (smaller in tests).
    pub(super) min_keys: usize,
    /// Filters built so far.
    pub(super) builds: u64,
}

impl Default for RowFilter {
    fn default() -> Self {
        RowFilter {
            hasher: RandomState::default(),
            current: None,
            next: None,
            building: false,
            min_keys: MIN_KEYS,
            builds: 0,
        }
    }
}

impl RowFilter {
    /// The hasher of every filter of this store (a scan hashes its keys
    /// outside the lock).
    pub(super) fn hasher(&self) -> RandomState {
        self.hasher.clone()
    }

    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// False only when `key` has no row in `marks` or the mark log, nor
    /// one being committed.
    pub(super) fn may_have_row(&self, key: &str) -> bool {
        match &self.current {
            Some(f) => f.contains(self.hash(key)),
            None => true,
        }
    }

    /// The writer committed a row of `key`.
    pub(super) fn add(&mut self, key: &str) {
        if self.current.is_none() && self.next.is_none() {
            // No filter yet: the first scan's snapshot has the row.
            return;
        }
        let h = self.hash(key);
        for f in [&mut self.current, &mut self.next].into_iter().flatten() {
            f.insert(h);
        }
    }

    /// Whether a build should start now (none is under way, and there is
    /// no filter yet or the current one holds more keys than it was sized
    /// for); if so, it counts as started until it finishes or is
    /// abandoned.
    pub(super) fn start(&mut self) -> bool {
        let due = !self.building && self.current.as_ref().is_none_or(|f| f.added > f.capacity);
        self.building |= due;
        due
    }

    /// The started build's filter, sized for `keys` on disk and as many
    /// again: from now on the writer adds to it.
    pub(super) fn begin(&mut self, keys: usize) {
        let keys = keys.saturating_mul(2).max(self.min_keys);
        self.next = Some(Bloom::with_capacity(keys));
    }

    /// Keys the scan read (their hashes).
    pub(super) fn add_scanned(&mut self, hashes: &[u64]) {
        if let Some(f) = self.next.as_mut() {
            for h in hashes {
                f.insert(*h);
            }
        }
    }

    /// The scan ended: its filter is the one in use.
    pub(super) fn finish(&mut self) {
        if let Some(f) = self.next.take() {
            self.current = Some(f);
            self.builds += 1;
        }
        self.building = false;
    }

    /// The build stopped: the current filter stays.
    pub(super) fn abandon(&mut self) {
        self.next = None;
        self.building = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filter sized for `min_keys`, built from an empty store.
    fn built(min_keys: usize) -> RowFilter {
        let mut rows = RowFilter {
            min_keys,
            ..RowFilter::default()
        };
        assert!(rows.start());
        rows.begin(0);
        rows.finish();
        rows
    }

    #[test]
    fn a_filter_has_every_key_added_and_few_others() {
        let mut rows = built(10_000);
        for i in 0..10_000 {
            rows.add(&format!("user:u{i}:sequence:20261204"));
        }
        for i in 0..10_000 {
            assert!(rows.may_have_row(&format!("user:u{i}:sequence:20261204")));
        }
        let false_positives = (10_000..110_000)
            .filter(|i| rows.may_have_row(&format!("user:u{i}:sequence:20261204")))
            .count();
        // Sized for 10,000 keys at 10 bits each: about 1%.
        assert!(false_positives < 3_000, "{false_positives} of 100000");
        assert!(
            false_positives > 0,
            "a Bloom filter that never errs is not one"
        );
    }

    #[test]
    fn without_a_filter_every_key_may_have_a_row() {
        let mut rows = RowFilter::default();
        rows.add("k");
        assert!(rows.may_have_row("absent"));
        assert!(rows.start(), "the first build is due");
        assert!(!rows.start(), "one at a time");
    }

    #[test]
    fn keys_added_during_a_build_are_in_the_new_filter() {
        let mut rows = built(64);
        rows.add("before");
        assert!(!rows.start(), "not full yet");
        for i in 0..100 {
            rows.add(&format!("fill{i}"));
        }
        assert!(rows.start(), "over capacity");
        rows.begin(0);
        assert!(!rows.start(), "a build is under way");
        rows.add("during");
        rows.add_scanned(&[rows.hash("before")]);
        assert!(rows.may_have_row("during") && rows.may_have_row("before"));
        rows.finish();
        assert!(rows.may_have_row("during") && rows.may_have_row("before"));
        assert_eq!(rows.builds, 2);
    }
}
