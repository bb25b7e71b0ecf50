//! The `keys` and `api` commands: argument parsing into [`crate::control::manage`] calls, and
//! what they print. Errors are returned as one line for `main` to print.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::cli::args::{ApiState, ClusterCommand, KeysCommand, LogsArgs};
use crate::cli::output;
use crate::control::manage::{self, KeyEdit, Manager, NewKey, parse_expiry};
use crate::control::state_dir;
use crate::keys::Level;
use crate::keys::file::{KeyEntry, KeyRateFile};
use crate::ratelimit::{Per, Rate};

fn manager(config_path: &Path) -> Result<Manager, String> {
    let config = super::env::load_config(config_path)?;
    Ok(Manager::open(
        Arc::new(config),
        super::env::actor(),
        super::env::seal_key()?,
    ))
}

fn level(s: &str) -> Result<Level, String> {
    s.parse()
}

fn perms(list: &[String], all: Option<&str>) -> Result<BTreeMap<String, Level>, String> {
    let mut m = BTreeMap::new();
    for p in list {
        let (c, l) = p
            .split_once('=')
            .ok_or_else(|| format!("--perm {p:?}: write CATEGORY=LEVEL, e.g. candidates=read"))?;
        m.insert(
            c.trim().to_string(),
            level(l.trim()).map_err(|e| format!("--perm {p:?}: {e}"))?,
        );
    }
    if let Some(a) = all {
        m.insert(
            "*".to_string(),
            level(a).map_err(|e| format!("--all: {e}"))?,
        );
    }
    Ok(m)
}

/// `20/s`, `20/s:40`, `100/m:10`.
pub(crate) fn parse_rate(s: &str) -> Result<KeyRateFile, String> {
    let err = || format!("--rate {s:?}: write N/s or N/m, optionally with a burst: 20/s:40");
    let (rate, burst) = match s.split_once(':') {
        Some((r, b)) => (r, Some(b.trim().parse::<u32>().map_err(|_| err())?)),
        None => (s, None),
    };
    let (n, unit) = rate.split_once('/').ok_or_else(err)?;
    let n: u32 = n.trim().parse().map_err(|_| err())?;
    let (per_second, per_minute) = match unit.trim() {
        "s" | "sec" | "second" => (Some(n), None),
        "m" | "min" | "minute" => (None, Some(n)),
        _ => return Err(err()),
    };
    Rate::from_parts(per_second, per_minute, burst).map_err(|e| format!("--rate {s:?}: {e}"))?;
    Ok(KeyRateFile {
        per_second,
        per_minute,
        burst,
    })
}

fn describe_rate(r: &Option<KeyRateFile>) -> String {
    match r {
        None => "default".into(),
        Some(r) => match Rate::from_parts(r.per_second, r.per_minute, r.burst) {
            Ok(rate) => {
                let unit = if rate.per == Per::Second { "s" } else { "min" };
                format!("{}/{unit}, burst {}", rate.count, rate.burst)
            }
            Err(_) => "invalid".into(),
        },
    }
}

fn perm_summary(e: &KeyEntry) -> String {
    if e.permissions.is_empty() {
        return "none".into();
    }
    e.permissions
        .iter()
        .map(|(c, l)| format!("{c}:{l}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// "3 minutes ago", "never".
pub(crate) fn ago(ms: Option<i64>) -> String {
    let Some(ms) = ms.filter(|m| *m > 0) else {
        return "never".into();
    };
    let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let s = (now - ms).max(0) / 1000;
    let (n, unit) = match s {
        0..=59 => return "just now".into(),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn confirm(question: &str) -> bool {
    let mut err = std::io::stderr();
    let _ = write!(err, "{question} [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes" | "YES")
}

pub(crate) fn keys(config_path: &Path, cmd: KeysCommand) -> Result<(), String> {
    let m = manager(config_path)?;
    match cmd {
        KeysCommand::Create {
            name,
            perms: p,
            all,
            rate,
            expires,
            quiet,
        } => {
            let permissions = perms(&p, all.as_deref())?;
            let rate_limit = rate.as_deref().map(parse_rate).transpose()?;
            let expires_at = expires
                .as_deref()
                .map(|e| parse_expiry(e).map_err(|x| format!("--expires: {x}")))
                .transpose()?;
            let c = m
                .create(NewKey {
                    name,
                    permissions,
                    rate_limit,
                    expires_at,
                })
                .map_err(|e| e.to_string())?;
            if quiet {
                output::line(c.secret.expose());
            } else {
                output::line(&format!(
                    "Created key '{}' (id {}).",
                    c.entry.name, c.entry.id
                ));
                output::line("");
                output::line(&format!("    {}", c.secret.expose()));
                output::line("");
                output::line(if c.sealed {
                    "Copy it now. It can be shown again with `keygate keys reveal` while KEYGATE_SEAL_KEY is set."
                } else {
                    "Copy it now: keygate keeps only its hash and cannot show it again."
                });
                if c.entry.permissions.is_empty() {
                    output::line(
                        "Note: this key has no access yet; give it some with `keygate keys edit --perm CATEGORY=LEVEL`.",
                    );
                }
            }
            Ok(())
        }
        KeysCommand::List { json } => {
            let file = m.read().map_err(|e| e.to_string())?;
            if let Some(err) = m.load_error() {
                let banner = format!(
                    "WARNING: the keys file does not load, so it is not in force: {err}\nA running gateway keeps enforcing the last good keys; below is the file on disk."
                );
                if json {
                    eprintln!("{banner}");
                } else {
                    output::line(&banner);
                    output::line("");
                }
            }
            let used = state_dir::read_last_used(&m.config.state_dir);
            if json {
                let v: Vec<_> = file
                    .keys
                    .iter()
                    .map(|e| manage::key_view(e, used.get(&e.id).copied()))
                    .collect();
                output::line(&serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(());
            }
            if file.keys.is_empty() {
                output::line(
                    "No keys yet. Create one with: keygate keys create --name NAME --perm CATEGORY=read",
                );
            } else {
                let mut rows = vec![
                    ["NAME", "ID", "KEY", "PERMISSIONS", "LAST USED", "CREATED"]
                        .map(String::from)
                        .to_vec(),
                ];
                for e in &file.keys {
                    rows.push(vec![
                        e.name.clone(),
                        e.id.clone(),
                        e.masked(),
                        perm_summary(e),
                        ago(used.get(&e.id).copied()),
                        e.created_at.clone().unwrap_or_else(|| "-".into()),
                    ]);
                }
                output::table(&rows);
            }
            if !file.api_enabled {
                output::line("API access is switched OFF: every key is refused (keygate api on).");
            }
            Ok(())
        }
        KeysCommand::Show { key, json } => {
            let e = m.get(&key).map_err(|e| e.to_string())?;
            let used = state_dir::read_last_used(&m.config.state_dir)
                .get(&e.id)
                .copied();
            if json {
                output::line(
                    &serde_json::to_string_pretty(&manage::key_view(&e, used)).unwrap_or_default(),
                );
                return Ok(());
            }
            let rows = [
                ("name", e.name.clone()),
                ("id", e.id.clone()),
                ("key", e.masked()),
                ("permissions", perm_summary(&e)),
                ("rate limit", describe_rate(&e.rate_limit)),
                (
                    "created",
                    e.created_at.clone().unwrap_or_else(|| "-".into()),
                ),
                (
                    "expires",
                    e.expires_at.clone().unwrap_or_else(|| "never".into()),
                ),
                ("last used", ago(used)),
            ];
            for (k, v) in rows {
                output::line(&format!("{k:<12} {v}"));
            }
            Ok(())
        }
        KeysCommand::Edit {
            key,
            name,
            perms: p,
            all,
            rate,
            expires,
        } => {
            let set_permissions = perms(&p, all.as_deref())?;
            let rate_limit = match rate.as_deref() {
                None => None,
                Some("none") => Some(None),
                Some(r) => Some(Some(parse_rate(r)?)),
            };
            let expires_at = match expires.as_deref() {
                None => None,
                Some("never") => Some(None),
                Some(e) => Some(Some(
                    parse_expiry(e).map_err(|x| format!("--expires: {x}"))?,
                )),
            };
            if name.is_none()
                && set_permissions.is_empty()
                && rate_limit.is_none()
                && expires_at.is_none()
            {
                return Err(
                    "nothing to change: give --name, --perm, --all, --rate or --expires".into(),
                );
            }
            let e = m
                .edit(
                    &key,
                    KeyEdit {
                        name,
                        set_permissions,
                        replace_permissions: None,
                        rate_limit,
                        expires_at,
                        if_match: None, // cluster:
                    },
                )
                .map_err(|e| e.to_string())?;
            output::line(&format!(
                "Updated key '{}' (id {}): {}.",
                e.name,
                e.id,
                perm_summary(&e)
            ));
            Ok(())
        }
        KeysCommand::Delete { key, yes } => {
            let e = m.get(&key).map_err(|e| e.to_string())?;
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(format!(
                        "not deleted: standard input is not a terminal, so keygate cannot ask for confirmation; run again with --yes to delete key '{}' (id {})",
                        e.name, e.id
                    ));
                }
                if !confirm(&format!(
                    "Delete key '{}' (id {})? Requests with it will get 401.",
                    e.name, e.id
                )) {
                    return Err("not deleted".into());
                }
            }
            let e = m.delete(&e.id).map_err(|e| e.to_string())?;
            output::line(&format!("Deleted key '{}' (id {}).", e.name, e.id));
            Ok(())
        }
        // cluster: the cluster's keys as a keys file.
        KeysCommand::Export { output } => {
            let config = super::env::load_config(config_path)?;
            super::cluster::cli(&config, ClusterCommand::Export { output })
        }
        KeysCommand::Reveal { key } => {
            let s = m.reveal(&key).map_err(|e| e.to_string())?;
            output::line(s.expose());
            Ok(())
        }
    }
}

// cluster: `keygate cluster status` and `keygate keys export`.
pub(crate) fn cluster(config_path: &Path, cmd: ClusterCommand) -> Result<(), String> {
    let config = super::env::load_config(config_path)?;
    super::cluster::cli(&config, cmd)
}

pub(crate) fn api(config_path: &Path, want: ApiState) -> Result<(), String> {
    let m = manager(config_path)?;
    match want {
        ApiState::Status => {
            let f = m.read().map_err(|e| e.to_string())?;
            output::line(if f.api_enabled {
                "API access is on"
            } else {
                "API access is off"
            });
        }
        ApiState::On | ApiState::Off => {
            let on = want == ApiState::On;
            // Only once the switch is written does the message say what follows.
            m.set_api(on).map_err(|e| e.to_string())?;
            let target = if m.config.cluster.is_some() {
                "the cluster store".to_string()
            } else {
                m.config.keys_file.display().to_string()
            };
            output::line(&if on {
                format!(
                    "API access switched on (written to {target}); a running gateway accepts keys again within 2 s."
                )
            } else {
                format!(
                    "API access switched off (written to {target}); a running gateway answers every key with 401 api_disabled within 2 s."
                )
            });
        }
    }
    Ok(())
}

pub(crate) fn logs(config_path: &Path, a: LogsArgs) -> Result<(), String> {
    let config = super::env::load_config(config_path)?;
    let crate::config::LogTarget::File(path) = &config.access_log.target else {
        return Err("access_log.path is \"-\" (standard output): there is no file to read".into());
    };
    let now = OffsetDateTime::now_utc();
    let filter = crate::observe::logs::Filter {
        path: a.path,
        method: a.method,
        status: a
            .status
            .as_deref()
            .map(crate::observe::logs::parse_status)
            .transpose()?,
        key: a.key,
        since: a
            .since
            .as_deref()
            .map(|s| crate::observe::logs::parse_since(s, now))
            .transpose()?,
        slower_than_ms: a
            .slower_than
            .as_deref()
            .map(crate::observe::logs::parse_slower_than)
            .transpose()?,
    };
    if a.limit == 0 {
        return Err("--limit must be at least 1".into());
    }
    // cluster: the recent requests of every replica (`--follow` reads the local log).
    if let Some(c) = &config.cluster
        && !a.follow
    {
        return super::cluster::cli_logs(c, &filter, a.limit, a.json);
    }
    crate::cli::logs::run(path, &filter, a.limit, a.json, a.follow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let r = parse_rate("20/s:40").unwrap();
        assert_eq!((r.per_second, r.burst), (Some(20), Some(40)));
        assert_eq!(parse_rate("100/m").unwrap().per_minute, Some(100));
        for bad in ["20", "20/h", "x/s", "0/s", "20/s:0", "20/s:x"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ago_words() {
        let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        assert_eq!(ago(None), "never");
        assert_eq!(ago(Some(now - 5_000)), "just now");
        assert_eq!(ago(Some(now - 180_000)), "3 minutes ago");
        assert_eq!(ago(Some(now - 3_600_000)), "1 hour ago");
    }
}
