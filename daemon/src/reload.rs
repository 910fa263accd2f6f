//! SIGHUP reload: re-read the `--config` file (the environment file that
//! systemd's `EnvironmentFile=` loads at start) and put the settings that
//! can change at run time in force, without dropping a connection.
//!
//! Reloadable: [`RELOADABLE`]. A key of the file that is absent keeps its
//! current value (so a flag given at start stays unless the file names it).
//! Other settings (socket, data directory, Redis address, pool size, zone,
//! mark reserve) apply at the next restart. A file that does not parse
//! changes nothing.

use crate::config::Config;
use crate::context::Context;
use crate::redis::RedisLink;
use clap::{CommandFactory, Parser};
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The settings a reload can change: each environment name with its
/// field, in one list, so that what is accepted and what is applied cannot
/// differ.
macro_rules! reloadable {
    ($(($key:literal, $field:ident)),* $(,)?) => {
        /// The environment names of the settings a reload can change.
        pub const RELOADABLE: &[&str] = &[$($key),*];

        /// Copies into `next` the settings `named` names that `parsed`
        /// holds other values of; returns each change as `NAME=value`.
        fn apply(next: &mut Config, parsed: &Config, named: &[&str]) -> Vec<String> {
            let mut changed = Vec::new();
            $(
                if named.contains(&$key) && next.$field != parsed.$field {
                    next.$field = parsed.$field.clone();
                    changed.push(format!("{}={:?}", $key, next.$field));
                }
            )*
            changed
        }
    };
}

reloadable![
    ("SEQD_LOG", log),
    ("SEQD_REDIS_TIMEOUT_MS", redis_timeout_ms),
    ("SEQD_BREAKER_THRESHOLD", breaker_threshold),
    ("SEQD_BREAKER_TRIALS", breaker_trials),
    ("SEQD_PROBE_BASE_MS", probe_base_ms),
    ("SEQD_PROBE_MAX_MS", probe_max_ms),
    ("SEQD_IDLE_TIMEOUT_MS", idle_timeout_ms),
    ("SEQD_HANDSHAKE_TIMEOUT_MS", handshake_timeout_ms),
    ("SEQD_MAX_INFLIGHT", max_inflight),
    ("SEQD_MAX_LINE", max_line),
    ("SEQD_MAX_FRAME", max_frame),
    ("SEQD_MAX_VALUE", max_value),
    ("SEQD_MAX_BATCH", max_batch),
    ("SEQD_MAX_KEYS", max_keys),
    ("SEQD_MAX_CONNECTIONS_PER_UID", max_connections_per_uid),
    ("SEQD_MAX_CONNECTIONS_PER_PID", max_connections_per_pid),
    ("SEQD_ALLOW_UIDS", allow_uids),
    ("SEQD_ALLOW_GIDS", allow_gids),
];

/// Reads `KEY=VALUE` lines; blank lines and `#` comments are skipped, and
/// one pair of surrounding quotes is removed from a value.
pub fn read_env_file(path: &Path) -> std::io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect())
}

/// `current` with the reloadable settings that `file` names; returns the
/// new configuration and the names of the settings that changed.
pub fn reloaded(
    current: &Config,
    file: &[(String, String)],
) -> Result<(Config, Vec<String>), String> {
    // Let clap validate the values: turn each reloadable key into its flag.
    let command = Config::command();
    let mut args = vec!["seqd".to_string()];
    let mut named = Vec::new();
    for (key, value) in file {
        if !RELOADABLE.contains(&key.as_str()) {
            continue;
        }
        let flag = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == key.as_str()))
            .and_then(|a| a.get_long())
            .ok_or_else(|| format!("{key} has no flag"))?;
        args.push(format!("--{flag}={value}"));
        named.push(key.as_str());
    }
    let parsed = Config::try_parse_from(&args).map_err(|e| e.to_string())?;
    let mut next = current.clone();
    let changed = apply(&mut next, &parsed, &named);
    Ok((next, changed))
}

/// Changes the log filter at run time (given by `main`, which owns the
/// subscriber).
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Waits for SIGHUP and reloads, logging what changed, until `stop`.
pub async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    ctx: Arc<Context>,
    link: Option<Arc<RedisLink>>,
    log_reload: Option<LogReload>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            got = hup.recv() => if got.is_none() { return },
            _ = stop.cancelled() => return,
        }
        let current = ctx.config();
        let Some(path) = current.config.clone() else {
            tracing::warn!("SIGHUP: no --config file to re-read; nothing changed");
            continue;
        };
        let file = match read_env_file(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "SIGHUP: cannot read the config file; nothing changed");
                continue;
            }
        };
        let (next, changed) = match reloaded(&current, &file) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "SIGHUP: invalid setting; nothing changed");
                continue;
            }
        };
        if next.log != current.log {
            if let Some(apply) = &log_reload {
                if let Err(e) = apply(&next.log) {
                    tracing::warn!(error = %e, "SIGHUP: invalid log filter; keeping the old one");
                }
            }
        }
        if let Some(link) = &link {
            link.reconfigure(next.redis_timeout(), next.breaker());
        }
        ctx.replace_config(next);
        if changed.is_empty() {
            tracing::info!("SIGHUP: reloaded; nothing changed");
        } else {
            tracing::info!(changed = %changed.join(" "), "SIGHUP: reloaded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config::try_parse_from(["seqd", "--redis-timeout-ms", "100"]).unwrap()
    }

    #[test]
    fn named_reloadable_settings_change_and_others_stay() {
        let file = vec![
            ("SEQD_BREAKER_THRESHOLD".to_string(), "7".to_string()),
            ("SEQD_LOG".to_string(), "debug".to_string()),
            (
                "REDIS_URL".to_string(),
                "redis://elsewhere:6379".to_string(),
            ),
        ];
        let (next, changed) = reloaded(&base(), &file).unwrap();
        assert_eq!(next.breaker_threshold, 7);
        assert_eq!(next.log, "debug");
        assert_eq!(next.redis_timeout_ms, 100, "not in the file: kept");
        assert_eq!(next.redis_url, base().redis_url, "not reloadable");
        assert_eq!(changed.len(), 2, "{changed:?}");
    }

    #[test]
    fn every_reloadable_setting_is_applied() {
        // A value other than the default for each, as the file would give.
        let values = [
            ("SEQD_LOG", "debug"),
            ("SEQD_REDIS_TIMEOUT_MS", "321"),
            ("SEQD_BREAKER_THRESHOLD", "9"),
            ("SEQD_BREAKER_TRIALS", "5"),
            ("SEQD_PROBE_BASE_MS", "55"),
            ("SEQD_PROBE_MAX_MS", "5555"),
            ("SEQD_IDLE_TIMEOUT_MS", "12345"),
            ("SEQD_HANDSHAKE_TIMEOUT_MS", "4321"),
            ("SEQD_MAX_INFLIGHT", "77"),
            ("SEQD_MAX_LINE", "7777"),
            ("SEQD_MAX_FRAME", "777777"),
            ("SEQD_MAX_VALUE", "77777"),
            ("SEQD_MAX_BATCH", "777"),
            ("SEQD_MAX_KEYS", "77"),
            ("SEQD_MAX_CONNECTIONS_PER_UID", "777"),
            ("SEQD_MAX_CONNECTIONS_PER_PID", "77"),
            ("SEQD_ALLOW_UIDS", "0,1000"),
            ("SEQD_ALLOW_GIDS", "0,1000"),
        ];
        assert_eq!(values.len(), RELOADABLE.len());
        let file: Vec<(String, String)> = values
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (_, changed) = reloaded(&base(), &file).unwrap();
        for key in RELOADABLE {
            assert!(
                changed.iter().any(|c| c.starts_with(&format!("{key}="))),
                "{key} was not applied: {changed:?}"
            );
        }
    }

    /// `docs/configuration.md` has a row for every flag, with its
    /// variable, and says `yes` under *reload* exactly for the settings a
    /// reload applies.
    #[test]
    fn the_configuration_page_lists_every_flag_and_what_a_reload_changes() {
        let page = include_str!("../../docs/configuration.md");
        for arg in Config::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "version"].contains(&long) {
                continue;
            }
            // A row's first cell names its flags (one or two).
            let named = |cell: &str| {
                cell.split('`')
                    .any(|f| f.split(' ').next() == Some(&format!("--{long}")))
            };
            let row = page
                .lines()
                .find(|l| l.starts_with("| ") && named(l.split(" | ").next().unwrap_or("")))
                .unwrap_or_else(|| panic!("no row for --{long}"));
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            if let Some(env) = &env {
                assert!(row.contains(&format!("`{env}`")), "--{long}: {env} missing");
            }
            let reload = env.as_deref().is_some_and(|e| RELOADABLE.contains(&e));
            let column = row.split(" | ").nth(3).unwrap_or("");
            assert_eq!(
                column == "yes",
                reload,
                "--{long}: reload column {column:?}"
            );
        }
    }

    #[test]
    fn invalid_values_change_nothing() {
        let file = vec![("SEQD_BREAKER_THRESHOLD".to_string(), "0".to_string())];
        assert!(reloaded(&base(), &file).is_err());
    }

    #[test]
    fn env_files_parse_like_systemds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seqd.env");
        std::fs::write(
            &p,
            "# c\n\nSEQD_LOG=\"info,seqd=debug\"\n SEQD_MAX_BATCH = 5 \nnot a pair\n",
        )
        .unwrap();
        assert_eq!(
            read_env_file(&p).unwrap(),
            vec![
                ("SEQD_LOG".to_string(), "info,seqd=debug".to_string()),
                ("SEQD_MAX_BATCH".to_string(), "5".to_string())
            ]
        );
    }
}
