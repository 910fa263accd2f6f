//! A small file system of the test's own (a tmpfs of a few MiB), to fill
//! to the last byte and free again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a temp dir; unmounted when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB. Mounting needs root (CI and the
    /// test command run as root): anywhere else this panics saying so,
    /// rather than passing without having tested anything.
    pub fn mount(mib: u64) -> SmallDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={mib}m,mode=0700"))
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "cannot mount a {mib} MiB tmpfs on {} (the full-disk tests need root): {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join("filler")
    }

    /// Writes a file until the file system has no byte left.
    pub fn fill(&self) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .expect("filler file");
        let chunk = vec![0xa5u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // The last bytes of a page, when the page itself could not be had.
        for _ in 0..4096 {
            if f.write(&[0xa5]).is_err() {
                break;
            }
        }
    }

    /// Removes what [`SmallDisk::fill`] wrote.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("removing the filler");
    }

    /// Bytes free on the file system.
    pub fn available(&self) -> u64 {
        // SAFETY: statvfs is plain data written whole by the call.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let path = std::ffi::CString::new(self.dir.path().as_os_str().as_encoded_bytes())
            .expect("a path without NUL");
        // SAFETY: a NUL-terminated path and a valid statvfs.
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
        st.f_bavail * st.f_frsize
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a process of the test may still hold a file open.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
