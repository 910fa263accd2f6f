//! The mark journal: how a number is made durable without waiting for
//! SQLite.
//!
//! # What it owns
//!
//! Two files in the data directory, `journal-0` and `journal-1`, of
//! [`FILE_SIZE`] bytes each (a larger one is used whole, never shrunk),
//! mapped shared into memory. A number whose
//! mark memory has verified against the disk, and that is at or below
//! its key's reserved ceiling, is made durable by a record stored into
//! the mapping, and answered at once; the writer thread puts it in SQLite
//! afterwards. A store into a shared mapping lands in the page cache: a
//! `kill -9` of seqd does not undo it, and it costs no system call. Power
//! loss is covered as before by the key's ceiling (fsynced when raised;
//! see `writer.rs`): after a reboot without a clean stop the journal is
//! not read, and every key goes on above its ceiling.
//!
//! # Format
//!
//! A file is a header — [`MAGIC`], then its generation (u64, little
//! endian) — and records. A record is `len: u16` (of the key), `flags:
//! u8` (bit 0: `expires_at`, 1: `ttl`, 2: `dirty_from` present), a zero
//! byte, `check: u32`, then `value`, `expires_at`, `ttl`, `dirty_from` (8
//! bytes each, little endian) and the key, padded to 8 bytes. `check` is
//! the CRC-32 of the file's generation and every other byte of the
//! record: a record of an earlier generation, or one a kill cut short,
//! does not check. Reading stops at the first record that does not check:
//! records are appended under one lock, one after the other, so only the
//! last one can be cut short, and its number was never answered.
//!
//! # Never a fault
//!
//! A store into a mapping that the file system cannot back kills the
//! process (SIGBUS). So every block of both files is reserved
//! (`posix_fallocate`) before they are mapped, the records a start finds
//! are read with `pread` (a page the disk cannot read is an error, not a
//! signal), and the mapping is locked in memory where the system allows
//! it, so no later store has to read a page back. When the blocks cannot
//! be reserved (a full disk), or the file system writes every change to
//! new blocks (btrfs, ZFS, bcachefs, F2FS, NILFS: a reservation there does
//! not cover an overwrite), the journal is not used: every number waits
//! for the store's commit, which fails as an error when the disk is full.
//!
//! # Rotation
//!
//! Records go to the active file. When it is full, the other file becomes
//! active if the writer has committed every record in it (it counts
//! them), and starts a new generation; otherwise the append is refused and
//! the number waits for the writer's commit, as a number does whose mark
//! is not verified.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Bytes of each journal file.
pub(super) const FILE_SIZE: usize = 4 << 20;
/// The first bytes of a journal file.
pub(super) const MAGIC: &[u8; 8] = b"seqdjnl1";
const HEADER: usize = 16;
/// A record's bytes before its key.
const FIXED: usize = 40;
const CHECK: std::ops::Range<usize> = 4..8;

const HAS_EXPIRES: u8 = 1;
const HAS_TTL: u8 = 2;
const HAS_DIRTY_FROM: u8 = 4;

/// One number, as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) key: String,
    pub(super) value: u64,
    pub(super) expires_at: Option<i64>,
    pub(super) ttl: Option<u64>,
    /// `Some` when the number came from the store (the key is pending
    /// reconciliation from this mark on).
    pub(super) dirty_from: Option<u64>,
}

/// A record to append.
pub(super) struct Entry<'a> {
    pub(super) key: &'a str,
    pub(super) value: u64,
    pub(super) expires_at: Option<i64>,
    pub(super) ttl: Option<u64>,
    pub(super) dirty_from: Option<u64>,
}

struct File {
    map: memmap2::MmapMut,
    /// The mapped file, and its path: [`Journal::intact`] compares them.
    file: std::fs::File,
    path: PathBuf,
    generation: u64,
    /// Where the next record goes.
    end: usize,
    /// Records appended in this generation, and those of them the writer
    /// has committed to SQLite.
    appended: u64,
    committed: u64,
}

/// Both journal files.
pub(super) struct Journal {
    files: [File; 2],
    active: usize,
}

/// The journal files as a start finds them: read, not mapped yet.
pub(super) struct Found {
    files: [Unmapped; 2],
}

struct Unmapped {
    file: std::fs::File,
    path: PathBuf,
    generation: u64,
}

impl Journal {
    /// Opens (or creates) the journal files in `dir` and returns the
    /// records they hold, to be put in SQLite (or discarded) before
    /// [`Found::map`] starts both files afresh.
    pub(super) fn open(dir: &Path) -> io::Result<(Found, Vec<Record>)> {
        let mut records = Vec::new();
        let a = open_file(&dir.join("journal-0"), &mut records)?;
        let b = open_file(&dir.join("journal-1"), &mut records)?;
        Ok((Found { files: [a, b] }, records))
    }

    /// Starts both files afresh, in new generations: their records are in
    /// SQLite, or were not to be read.
    fn restart(&mut self) {
        for f in &mut self.files {
            f.restart();
        }
        self.active = 0;
    }

    /// Appends a record; returns the file it is in, or `None` when the
    /// journal has no room (the writer has not committed the other file's
    /// records yet) or the key is too long for a record.
    pub(super) fn append(&mut self, e: &Entry<'_>) -> Option<u8> {
        let len = u16::try_from(e.key.len()).ok()?;
        let need = (FIXED + e.key.len()).next_multiple_of(8);
        if self.files[self.active].end + need > self.files[self.active].map.len() {
            let other = 1 - self.active;
            if self.files[other].appended != self.files[other].committed {
                return None;
            }
            self.files[other].restart();
            self.active = other;
        }
        let f = &mut self.files[self.active];
        if f.end + need > f.map.len() {
            return None;
        }
        let r = &mut f.map[f.end..f.end + need];
        let flag = |present: bool, bit: u8| if present { bit } else { 0 };
        let flags = flag(e.expires_at.is_some(), HAS_EXPIRES)
            | flag(e.ttl.is_some(), HAS_TTL)
            | flag(e.dirty_from.is_some(), HAS_DIRTY_FROM);
        r[0..2].copy_from_slice(&len.to_le_bytes());
        r[2] = flags;
        r[3] = 0;
        r[8..16].copy_from_slice(&e.value.to_le_bytes());
        r[16..24].copy_from_slice(&e.expires_at.unwrap_or(0).to_le_bytes());
        r[24..32].copy_from_slice(&e.ttl.unwrap_or(0).to_le_bytes());
        r[32..40].copy_from_slice(&e.dirty_from.unwrap_or(0).to_le_bytes());
        r[FIXED..FIXED + e.key.len()].copy_from_slice(e.key.as_bytes());
        r[FIXED + e.key.len()..].fill(0);
        let check = checksum(f.generation, r);
        r[CHECK].copy_from_slice(&check.to_le_bytes());
        f.end += need;
        f.appended += 1;
        Some(self.active as u8)
    }

    /// Whether both files are still the ones mapped, whole: another
    /// process (root) that removes, replaces or truncates one makes the
    /// journal unfit (a record in a replaced file would not be read at the
    /// next start; a store past a truncated end is a signal), and the
    /// caller stops using it.
    pub(super) fn intact(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        for f in &self.files {
            let mapped = f.file.metadata().map_err(|e| e.to_string())?;
            let at_path = std::fs::metadata(&f.path);
            let why = if mapped.nlink() == 0 {
                Some("was removed or replaced".to_string())
            } else if !at_path.is_ok_and(|m| m.ino() == mapped.ino() && m.dev() == mapped.dev()) {
                Some("was replaced".to_string())
            } else if (mapped.len() as usize) < f.map.len() {
                Some(format!("was cut to {} bytes", mapped.len()))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(format!("{} {why} while mapped", f.path.display()));
            }
        }
        Ok(())
    }

    /// The writer committed one record of `file` to SQLite.
    pub(super) fn committed(&mut self, file: u8) {
        if let Some(f) = self.files.get_mut(file as usize) {
            f.committed += 1;
        }
    }
}

impl Found {
    /// Reserves every block of both files, maps them and starts both in
    /// new generations: their records are in SQLite, or were not to be
    /// read. An error says why the journal cannot be used in this run.
    pub(super) fn map(&self) -> io::Result<Journal> {
        let [a, b] = &self.files;
        let mut journal = Journal {
            files: [a.map()?, b.map()?],
            active: 0,
        };
        journal.restart();
        Ok(journal)
    }

    /// Gives the files' blocks back (the journal is not used in this run):
    /// their records are in SQLite, or were not to be read.
    pub(super) fn discard(self) {
        for f in self.files {
            if let Err(e) = f.file.set_len(0) {
                tracing::debug!(error = %e, path = %f.path.display(), "emptying a journal file failed");
            }
        }
    }
}

impl Unmapped {
    fn map(&self) -> io::Result<File> {
        copy_on_write(&self.file).map_or(Ok(()), |fs| {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "the data directory is on {fs}, which writes every change to new blocks: \
                     a reservation cannot cover a store into a mapped file there"
                ),
            ))
        })?;
        // Grown to size, never shrunk: a larger file (another release's)
        // is used whole.
        let len = (self.file.metadata()?.len() as usize).max(FILE_SIZE);
        reserve(&self.file, len).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("reserving {len} bytes for {}: {e}", self.path.display()),
            )
        })?;
        // SAFETY: the file is in seqd's private data directory, which one
        // seqd holds at a time (the directory lock): nothing else resizes
        // it while it is mapped.
        let map = unsafe { memmap2::MmapMut::map_mut(&self.file)? };
        // Kept in memory where the system allows it: a page the kernel
        // wrote back and dropped would be read again by the next store
        // into it, and a read that fails there is a signal, not an error.
        if let Err(e) = map.lock() {
            tracing::debug!(error = %e, path = %self.path.display(), "the journal's pages are not locked in memory");
        }
        Ok(File {
            map,
            file: self.file.try_clone()?,
            path: self.path.clone(),
            generation: self.generation,
            end: HEADER,
            appended: 0,
            committed: 0,
        })
    }
}

/// Allocates every block of `file`'s first `len` bytes, growing it to
/// `len` when shorter: a store into those bytes never needs a block.
fn reserve(file: &std::fs::File, len: usize) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: the descriptor is open for the call's duration;
        // posix_fallocate reads nothing else. It returns the error number.
        match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
            0 => return Ok(()),
            libc::EINTR => continue,
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// The name of `file`'s file system when it never overwrites a block in
/// place (a store into a reserved block may then need a new one).
fn copy_on_write(file: &std::fs::File) -> Option<&'static str> {
    // SAFETY: statfs is plain data, written whole by fstatfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open and `st` is a valid statfs.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    match st.f_type as u64 {
        0x9123_683e => Some("btrfs"),
        0x2fc1_2fc1 => Some("ZFS"),
        0xca45_1a4e => Some("bcachefs"),
        0xf2f5_2010 => Some("F2FS"),
        0x3434 => Some("NILFS"),
        _ => None,
    }
}

impl File {
    fn restart(&mut self) {
        self.generation += 1;
        self.map[..8].copy_from_slice(MAGIC);
        self.map[8..16].copy_from_slice(&self.generation.to_le_bytes());
        self.end = HEADER;
        self.appended = 0;
        self.committed = 0;
    }
}

/// CRC-32 of the generation and every byte of the record but its check.
fn checksum(generation: u64, record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(&record[..CHECK.start]);
    h.update(&record[CHECK.end..]);
    h.finalize()
}

/// Opens one journal file, reading its records into `records` with
/// `pread`, not through a mapping. A file that is there but is not a
/// journal is refused: the data directory holds something seqd did not
/// write.
fn open_file(path: &Path, records: &mut Vec<Record>) -> io::Result<Unmapped> {
    use std::io::Read;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // Private, as the store is: it holds the same numbers.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let generation = if bytes.len() >= HEADER {
        if &bytes[..8] != MAGIC && bytes[..HEADER].iter().any(|b| *b != 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a seqd journal", path.display()),
            ));
        }
        let generation = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        read_records(&bytes, generation, records);
        generation
    } else {
        0
    };
    Ok(Unmapped {
        file,
        path: path.to_path_buf(),
        generation,
    })
}

/// Reads the records of `generation` from a file's bytes until the first
/// that does not check; returns where it stopped.
fn read_records(bytes: &[u8], generation: u64, records: &mut Vec<Record>) -> usize {
    let mut at = HEADER;
    while at + FIXED <= bytes.len() {
        let len = u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
        let need = (FIXED + len).next_multiple_of(8);
        if at + need > bytes.len() {
            break;
        }
        let r = &bytes[at..at + need];
        let check = u32::from_le_bytes(r[CHECK].try_into().expect("4 bytes"));
        if check != checksum(generation, r) {
            break;
        }
        let Ok(key) = std::str::from_utf8(&r[FIXED..FIXED + len]) else {
            break;
        };
        let word = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().expect("8 bytes"));
        let flags = r[2];
        records.push(Record {
            key: key.to_string(),
            value: word(8),
            expires_at: (flags & HAS_EXPIRES != 0).then(|| word(16) as i64),
            ttl: (flags & HAS_TTL != 0).then(|| word(24)),
            dirty_from: (flags & HAS_DIRTY_FROM != 0).then(|| word(32)),
        });
        at += need;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: u64) -> Entry<'_> {
        Entry {
            key,
            value,
            expires_at: Some(1_700_000_000),
            ttl: Some(86_400),
            dirty_from: (value % 2 == 0).then_some(value - 1),
        }
    }

    fn record(key: &str, value: u64) -> Record {
        let e = entry(key, value);
        Record {
            key: key.into(),
            value,
            expires_at: e.expires_at,
            ttl: e.ttl,
            dirty_from: e.dirty_from,
        }
    }

    #[test]
    fn records_are_read_back_after_the_process_is_gone_and_not_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (files, found) = Journal::open(dir.path()).unwrap();
        assert!(found.is_empty());
        let mut j = files.map().unwrap();
        for (k, v) in [("a", 1), ("user:u1:sequence:2026-12-04", 2), ("", 3)] {
            assert_eq!(j.append(&entry(k, v)), Some(0));
        }
        let conv = Entry {
            key: "conv:private:a:b",
            value: 7,
            expires_at: None,
            ttl: None,
            dirty_from: None,
        };
        j.append(&conv).unwrap();
        // No flush, no unmap in order: a kill leaves the pages as they are.
        std::mem::forget(j);
        let (files, found) = Journal::open(dir.path()).unwrap();
        let mut want = vec![
            record("a", 1),
            record("user:u1:sequence:2026-12-04", 2),
            record("", 3),
        ];
        want.push(Record {
            key: "conv:private:a:b".into(),
            value: 7,
            expires_at: None,
            ttl: None,
            dirty_from: None,
        });
        assert_eq!(found, want);
        drop(files.map().unwrap());
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert!(found.is_empty(), "a new generation reads none of the old");
    }

    #[test]
    fn a_record_cut_short_ends_the_journal_and_hides_nothing_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap().0.map().unwrap();
        for v in 1..=3 {
            j.append(&entry("k", v)).unwrap();
        }
        let third = j.files[0].end - 48;
        // Every way of cutting the last record short: any of its bytes
        // not written (still the zeros of a fresh file).
        for cut in third..j.files[0].end {
            let mut bytes = j.files[0].map.to_vec();
            bytes[cut..j.files[0].end].fill(0);
            if bytes[cut..j.files[0].end] == j.files[0].map[cut..j.files[0].end] {
                continue; // those bytes were zeros anyway
            }
            let mut found = Vec::new();
            let end = read_records(&bytes, j.files[0].generation, &mut found);
            assert_eq!(found, vec![record("k", 1), record("k", 2)], "cut at {cut}");
            assert_eq!(end, third);
        }
    }

    #[test]
    fn a_full_file_gives_way_to_the_other_only_once_its_records_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap().0.map().unwrap();
        let per_file = (FILE_SIZE - HEADER) / 48;
        for v in 0..per_file as u64 {
            assert_eq!(j.append(&entry("k", v + 1)), Some(0));
        }
        // File 1 is empty (nothing to commit): it takes over.
        assert_eq!(j.append(&entry("k", 1)), Some(1));
        for v in 1..per_file as u64 {
            assert_eq!(j.append(&entry("k", v + 1)), Some(1));
        }
        // File 0's records are not all committed: no room.
        assert_eq!(j.append(&entry("k", 9)), None);
        for _ in 0..per_file {
            j.committed(0);
        }
        assert_eq!(j.append(&entry("k", 9)), Some(0));
        std::mem::forget(j);
        // File 0 restarted: its old records are gone; file 1's remain.
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found.len(), per_file + 1);
        assert_eq!(found.first(), Some(&record("k", 9)));
    }

    #[test]
    fn a_short_or_long_file_keeps_its_records_and_is_used_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap().0.map().unwrap();
        j.append(&entry("k", 1)).unwrap();
        j.append(&entry("k", 2)).unwrap();
        let end = j.files[0].end;
        std::mem::forget(j);
        let path = dir.path().join("journal-0");
        let resize = |len: u64| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(len)
                .unwrap()
        };
        // Cut to its records (a short file), then grown past the size.
        resize(end as u64);
        let (_, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found, vec![record("k", 1), record("k", 2)]);
        let long = 2 * FILE_SIZE as u64;
        resize(long);
        let (files, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found, vec![record("k", 1), record("k", 2)]);
        let j = files.map().unwrap();
        assert_eq!(j.files[0].map.len() as u64, long, "never shrunk");
        assert_eq!(j.files[1].map.len(), FILE_SIZE, "grown to size");
    }

    #[test]
    fn every_block_is_reserved_before_the_files_are_mapped() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap().0.map().unwrap();
        for name in ["journal-0", "journal-1"] {
            let meta = std::fs::metadata(dir.path().join(name)).unwrap();
            assert_eq!(meta.len(), FILE_SIZE as u64, "{name}");
            // st_blocks counts 512-byte units: a sparse file has fewer.
            assert!(
                meta.blocks() * 512 >= FILE_SIZE as u64,
                "{name}: {} blocks",
                meta.blocks()
            );
        }
        drop(j);
    }

    #[test]
    fn discarded_files_give_their_blocks_back_and_keep_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap().0.map().unwrap();
        j.append(&entry("k", 1)).unwrap();
        std::mem::forget(j);
        let (files, found) = Journal::open(dir.path()).unwrap();
        assert_eq!(found, vec![record("k", 1)]);
        files.discard();
        for name in ["journal-0", "journal-1"] {
            assert_eq!(std::fs::metadata(dir.path().join(name)).unwrap().len(), 0);
        }
        let (files, found) = Journal::open(dir.path()).unwrap();
        assert!(found.is_empty());
        assert!(files.map().is_ok(), "used again at the next start");
    }

    #[test]
    fn a_file_removed_replaced_or_cut_under_the_mapping_is_noticed() {
        let check = |damage: &dyn Fn(&Path)| {
            let dir = tempfile::tempdir().unwrap();
            let j = Journal::open(dir.path()).unwrap().0.map().unwrap();
            assert_eq!(j.intact(), Ok(()));
            damage(&dir.path().join("journal-1"));
            let err = j.intact().unwrap_err();
            drop(j);
            err
        };
        let removed = check(&|p| std::fs::remove_file(p).unwrap());
        assert!(
            removed.ends_with("journal-1 was removed or replaced while mapped"),
            "{removed}"
        );
        let replaced = check(&|p| {
            let other = p.with_extension("new");
            std::fs::write(&other, vec![0u8; FILE_SIZE]).unwrap();
            std::fs::rename(&other, p).unwrap();
        });
        assert!(
            replaced.ends_with("journal-1 was removed or replaced while mapped"),
            "{replaced}"
        );
        let cut = check(&|p| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(4096)
                .unwrap()
        });
        assert!(
            cut.ends_with("journal-1 was cut to 4096 bytes while mapped"),
            "{cut}"
        );
    }

    #[test]
    fn the_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("journal-0"), b"").unwrap();
        std::fs::set_permissions(
            dir.path().join("journal-0"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        Journal::open(dir.path()).unwrap();
        for name in ["journal-0", "journal-1"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("journal-1"), b"something else entirely").unwrap();
        let err = Journal::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("is not a seqd journal"), "{err}");
    }
}
