//! Everything keygate reads from the environment, read once here (the library reads
//! none of it): the config path, the admin token, the seal key, the CLI's actor.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::keys::seal::SealKey;

/// Where config.yaml is looked for when neither `-c` nor `$KEYGATE_CONFIG` names it.
pub(crate) const CONFIG_SEARCH: [&str; 2] = ["config.yaml", "/etc/keygate/config.yaml"];

/// Finds config.yaml: `-c` or `$KEYGATE_CONFIG` (clap reads both into `flag`), else
/// `./config.yaml`, else `/etc/keygate/config.yaml`. None of them: an error naming
/// every place searched and how to start.
pub(crate) fn config_path(flag: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = flag.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = CONFIG_SEARCH.iter().map(PathBuf::from).find(|p| p.exists()) {
        return Ok(p);
    }
    Err(format!(
        "no config found: searched -c/--config (not given), $KEYGATE_CONFIG (not set), ./{}, {}. \
         To start from the example: cp config.example.yaml config.yaml",
        CONFIG_SEARCH[0], CONFIG_SEARCH[1]
    ))
}

/// The admin token from `$<name>`, else the file named by `$<name>_FILE`.
pub(crate) fn admin_token(name: &str) -> Option<String> {
    if let Ok(t) = std::env::var(name)
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_string());
    }
    let path = std::env::var(format!("{name}_FILE")).ok()?;
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(file = %path, error = %e, "cannot read the admin token file; the admin API is off");
            None
        }
    }
}

/// The seal key as written (base64) from `$KEYGATE_SEAL_KEY`, else the file named by
/// `$KEYGATE_SEAL_KEY_FILE`; `Ok(None)` when neither is set.
pub(crate) fn seal_key_text() -> Result<Option<String>, String> {
    if let Ok(v) = std::env::var("KEYGATE_SEAL_KEY")
        && !v.is_empty()
    {
        return Ok(Some(v));
    }
    if let Ok(path) = std::env::var("KEYGATE_SEAL_KEY_FILE")
        && !path.is_empty()
    {
        return std::fs::read_to_string(&path)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| format!("KEYGATE_SEAL_KEY_FILE: {path}: {e}"));
    }
    Ok(None)
}

/// The seal key, parsed, for the key commands.
pub(crate) fn seal_key() -> Result<Option<Arc<SealKey>>, String> {
    match seal_key_text()? {
        Some(t) => SealKey::from_base64(&t)
            .map(|k| Some(Arc::new(k)))
            .map_err(|e| format!("KEYGATE_SEAL_KEY: {e}")),
        None => Ok(None),
    }
}

/// Who made a change from the command line: `cli:<user name>`.
pub(crate) fn actor() -> String {
    use std::os::unix::fs::MetadataExt;
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let uid = std::fs::metadata("/proc/self").ok()?.uid();
            user_name(uid).or_else(|| Some(format!("uid{uid}")))
        })
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{user}")
}

/// The name of `uid` in /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?;
        (id.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

/// Loads config.yaml and hands it what the library must not read itself: the
/// Redis password of a `cluster:` section (`$<redis_password_env>`, else the file
/// named by `$<redis_password_env>_FILE`).
pub(crate) fn load_config(path: &Path) -> Result<crate::config::Config, String> {
    let mut config = crate::config::Config::load(path).map_err(|e| e.to_string())?;
    let password = redis_password(&config);
    config.set_redis_password(password.as_deref());
    Ok(config)
}

/// The Redis password named by the config's `cluster.redis_password_env`.
pub(crate) fn redis_password(config: &crate::config::Config) -> Option<String> {
    let name = config.cluster.as_ref()?.password_env.as_deref()?;
    if let Ok(p) = std::env::var(name)
        && !p.is_empty()
    {
        return Some(p);
    }
    let path = std::env::var(format!("{name}_FILE")).ok()?;
    std::fs::read_to_string(path)
        .ok()
        .map(|p| p.trim_end_matches(['\r', '\n']).to_string())
        .filter(|p| !p.is_empty())
}
