//! Processes and waiting: free ports, the workspace's binaries, signals,
//! and polling a condition with a deadline (nothing sleeps in place of a
//! condition).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// How long any wait for a process to come up may take.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` until it holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// Path of a binary built by this workspace (`seqd`, `seqctl`), next to the
/// test executable's `deps` directory; `SEQD_BIN_DIR` overrides.
pub fn workspace_bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("SEQD_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            exe.parent()
                .and_then(Path::parent)
                .expect("target/<profile>")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build --workspace --all-features --bins`",
        path.display()
    );
    path
}

/// SIGKILL and reap a child we spawned, if it is running.
pub(crate) fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

pub(crate) fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned; no memory is involved.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Runs `cmd` to its end, with its output captured, failing the test if it
/// is still running after [`STARTUP_DEADLINE`] (it is killed then): for
/// commands that must refuse to start.
pub fn output_within_deadline(cmd: &mut std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning");
    let start = Instant::now();
    while child.try_wait().expect("waiting").is_none() {
        if start.elapsed() > STARTUP_DEADLINE {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collecting output");
            panic!(
                "{cmd:?} still running after {STARTUP_DEADLINE:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().expect("collecting output")
}
