//! One host, one store: a second seqd on the same data directory, a
//! `--socket` that names something other than a stale socket, the modes
//! of what seqd creates, and stores of older and newer schema versions.

use seqd_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Starts `cmd` (a seqd by hand) and waits until `socket` accepts.
fn spawn_serving(cmd: &mut std::process::Command, socket: &std::path::Path) -> std::process::Child {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the socket", STARTUP_DEADLINE, || {
        std::os::unix::net::UnixStream::connect(socket).is_ok()
    });
    child
}

#[test]
fn a_second_seqd_on_the_same_data_dir_exits_naming_the_holder() {
    let seqd = Seqd::start(SeqdOptions::local());
    assert_eq!(seq_of(&seqd.text().cmd("CONV NEXT group g")), 1);
    let out = output_within_deadline(&mut seqd_command(
        &seqd.dir.path().join("second.sock"),
        &seqd.data_dir(),
    ));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("is in use by another seqd (pid {}", seqd.pid())),
        "{stderr}"
    );
    assert!(!seqd.dir.path().join("second.sock").exists());
    // The first one never noticed, and nothing was issued twice.
    assert_eq!(seq_of(&seqd.text().cmd("CONV NEXT group g")), 2);
}

#[test]
fn a_socket_path_that_is_a_file_or_symlink_is_refused_and_left_alone() {
    let mut seqd = Seqd::start(SeqdOptions::local());
    for _ in 0..3 {
        seqd.text().cmd("CONV NEXT group g");
    }
    seqd.terminate();
    let db = seqd.data_dir().join("seqd.db");
    let link = seqd.dir.path().join("link.sock");
    std::os::unix::fs::symlink(&db, &link).unwrap();
    for (socket, what) in [(&db, "a regular file"), (&link, "a symlink")] {
        let out = output_within_deadline(&mut seqd_command(socket, &seqd.data_dir()));
        assert_eq!(out.status.code(), Some(1), "{socket:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("is {what}")), "{stderr}");
    }
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    // The store is intact: numbers go on after 3.
    seqd.restart();
    assert_eq!(seq_of(&seqd.text().cmd("CONV NEXT group g")), 4);
}

#[test]
fn the_data_dir_and_store_files_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, data) = (dir.path().join("s.sock"), dir.path().join("data"));
    let mut cmd = seqd_command(&socket, &data);
    // SAFETY: umask(2) between fork and exec touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    let mut child = spawn_serving(&mut cmd, &socket);
    let mut t = TextConn::connect(&socket);
    assert_eq!(seq_of(&t.cmd("CONV NEXT private alice bob")), 1);
    assert_eq!(mode(&data), 0o700);
    for f in ["seqd.db", "seqd.db-wal", "seqd.db-shm", "seqd.lock"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&socket), 0o660);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_existing_readable_data_dir_and_store_are_made_private() {
    let mut seqd = Seqd::start(SeqdOptions::local());
    seqd.text().cmd("CONV NEXT group g");
    seqd.terminate();
    let data = seqd.data_dir();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = data.join("seqd.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    seqd.restart();
    assert_eq!((mode(&data), mode(&db)), (0o700, 0o600));
}

/// `PRAGMA user_version` and the `written_by` meta row of a store.
fn store_version(data: &std::path::Path) -> (u32, String) {
    let db = rusqlite::Connection::open(data.join("seqd.db")).unwrap();
    let version = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let by = db
        .query_row(
            "SELECT value FROM meta WHERE name = 'written_by'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (version, by)
}

#[test]
fn a_store_written_by_a_newer_release_is_refused_naming_both_versions() {
    let mut seqd = Seqd::start(SeqdOptions::local());
    assert_eq!(seq_of(&seqd.text().cmd("CONV NEXT group g")), 1);
    seqd.terminate();
    let (current, by) = store_version(&seqd.data_dir());
    assert!(current >= 1);
    assert_eq!(by, env!("CARGO_PKG_VERSION"));
    // A newer release's store: a schema this seqd does not know.
    {
        let db = rusqlite::Connection::open(seqd.data_dir().join("seqd.db")).unwrap();
        db.pragma_update(None, "user_version", current + 1).unwrap();
        db.execute(
            "UPDATE meta SET value = '9.4.0' WHERE name = 'written_by'",
            [],
        )
        .unwrap();
    }
    let out = output_within_deadline(&mut seqd_command(&seqd.socket(), &seqd.data_dir()));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for part in [
        format!("has schema version {}", current + 1),
        "last opened by seqd 9.4.0".to_string(),
        format!(
            "this seqd {} reads schema versions up to {current}",
            env!("CARGO_PKG_VERSION")
        ),
        "Run seqd 9.4.0 or newer".to_string(),
    ] {
        assert!(stderr.contains(&part), "{part:?} not in {stderr}");
    }
    assert!(!seqd.socket().exists(), "nothing served");
    // The store was not touched: still the newer version.
    assert_eq!(
        store_version(&seqd.data_dir()),
        (current + 1, "9.4.0".to_string())
    );
}

#[test]
fn stores_from_before_versions_were_recorded_are_migrated_in_place() {
    // Two layouts of unversioned stores, built from their own SQL: the
    // first one (a mark per key, nothing else) and the one written just
    // before the version was recorded.
    let first = "CREATE TABLE marks (key TEXT PRIMARY KEY, value INTEGER NOT NULL,
                     expires_at INTEGER) WITHOUT ROWID;
                 INSERT INTO marks VALUES ('seq:group:old', 41, NULL);";
    let last_unversioned = "CREATE TABLE marks (key TEXT PRIMARY KEY, value INTEGER NOT NULL,
                     expires_at INTEGER, dirty INTEGER NOT NULL DEFAULT 0, ttl INTEGER,
                     ceiling INTEGER, dirty_from INTEGER, gen INTEGER NOT NULL DEFAULT 0)
                     WITHOUT ROWID;
                 CREATE TABLE mark_log (seq INTEGER PRIMARY KEY, key TEXT NOT NULL,
                     value INTEGER NOT NULL, expires_at INTEGER, dirty INTEGER NOT NULL,
                     ttl INTEGER, ceiling INTEGER, dirty_from INTEGER,
                     gen INTEGER NOT NULL DEFAULT 0);
                 CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
                 INSERT INTO meta VALUES ('clean', '1');
                 INSERT INTO marks VALUES ('seq:group:old', 41, NULL, 0, NULL, 41, NULL, 1);";
    for (name, sql) in [("first", first), ("last unversioned", last_unversioned)] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        rusqlite::Connection::open(data.join("seqd.db"))
            .unwrap()
            .execute_batch(sql)
            .unwrap();
        let socket = dir.path().join("s.sock");
        let mut child = spawn_serving(&mut seqd_command(&socket, &data), &socket);
        let mut t = TextConn::connect(&socket);
        assert_eq!(
            seq_of(&t.cmd("CONV NEXT group old")),
            42,
            "{name}: the mark is read"
        );
        assert_eq!(seq_of(&t.cmd("CONV NEXT group new")), 1, "{name}");
        let _ = child.kill();
        let _ = child.wait();
        let (version, by) = store_version(&data);
        assert!(version >= 1, "{name}: stamped");
        assert_eq!(by, env!("CARGO_PKG_VERSION"), "{name}");
    }
}
