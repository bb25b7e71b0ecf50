//! The keys file in cluster mode: it seeds an empty cluster once (the seeding
//! script is atomic, so exactly one replica wins), and afterwards it is applied
//! again only when its top-level `revision:` is higher than the one the cluster
//! recorded, so a pod with a stale mounted Secret cannot undo newer changes. Keys
//! from the file are marked as such and are read-only in the admin API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::store::{self, Source};
use super::{Cluster, lock};
use crate::control::reload::Reloader;
use crate::keys::file::KeysFile;
use crate::keys::store::KeySet;

/// The keys file as the cluster stores it.
fn file_entries(
    file: &KeysFile,
    seal: Option<&crate::keys::seal::SealKey>,
) -> Result<Vec<(String, String, String)>, String> {
    file.keys
        .iter()
        .map(|e| {
            let s = store::to_stored(e.clone(), Source::File, seal)?;
            Ok((e.id.clone(), e.name.to_lowercase(), store::stored_json(&s)))
        })
        .collect()
}

fn new_epoch() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Seeds an empty cluster from the keys file. Only a replica that never knew an
/// epoch seeds: one that did sees a wiped store, which is not "no keys".
pub(crate) async fn seed(
    c: &Cluster,
    shared: &Reloader,
    con: &mut ConnectionManager,
) -> redis::RedisResult<()> {
    let exists: bool = con.exists(&c.layout.epoch).await?;
    if exists || lock(&c.epoch).is_some() {
        return Ok(());
    }
    let path = shared.current().config.keys_file.clone();
    let file = match KeysFile::load(&path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot seed the cluster from the keys file");
            return Ok(());
        }
    };
    let entries = match file_entries(&file, c.seal.as_deref()) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot seed the cluster from the keys file");
            return Ok(());
        }
    };
    let l = &c.layout;
    let script = store::apply_file();
    let mut inv = script.prepare_invoke();
    inv.key(&l.epoch)
        .key(&l.keys)
        .key(&l.revs)
        .key(&l.names)
        .key(&l.version)
        .key(&l.changes)
        .key(&l.file_revision)
        .key(&l.api);
    inv.arg("")
        .arg(new_epoch())
        .arg("0")
        .arg(file.revision.unwrap_or(0).to_string())
        .arg(if file.api_enabled { "1" } else { "0" });
    for (id, lname, json) in &entries {
        inv.arg(id).arg(lname).arg(json);
    }
    let (outcome, version): (String, u64) = inv.invoke_async(con).await?;
    if outcome == "ok" {
        tracing::info!(node = %c.cfg.node_name, keys = entries.len(), version, "seeded the cluster from the keys file");
    }
    Ok(())
}

/// Applies the keys file again when its `revision:` is higher than the one the
/// cluster last applied (a stale mounted Secret cannot undo newer changes).
pub(crate) async fn follow_file(c: Arc<Cluster>, shared: Arc<Reloader>) {
    // The file version that needs nothing more (applied, not newer, or refused).
    let mut settled = None;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let path = shared.current().config.keys_file.clone();
        let now = crate::config::identity::identity(&path);
        if now.is_none() || now == settled {
            continue;
        }
        let Ok(file) = KeysFile::load(&path) else {
            continue;
        };
        let Some(rev) = file.revision else {
            settled = now;
            continue;
        };
        let Some(mut con) = c.bulk_connection() else {
            continue;
        };
        let Some(epoch) = lock(&c.epoch).clone() else {
            continue;
        };
        let applied: Option<u64> = match con.get(&c.layout.file_revision).await {
            Ok(v) => v,
            Err(_) => continue,
        };
        let applied = applied.unwrap_or(0);
        if rev <= applied {
            settled = now;
            continue;
        }
        let started = Instant::now();
        match apply_file(&c, &shared, &mut con, &epoch, applied, &file).await {
            Ok(()) => {
                settled = now;
                tracing::info!(
                    revision = rev,
                    ms = started.elapsed().as_millis() as u64,
                    "applied the keys file to the cluster"
                );
                c.changed.notify_one();
            }
            Err(e) => {
                settled = now;
                tracing::error!(revision = rev, error = %e, "the keys file was not applied to the cluster");
            }
        }
    }
}

async fn apply_file(
    c: &Cluster,
    shared: &Reloader,
    con: &mut ConnectionManager,
    epoch: &str,
    applied: u64,
    file: &KeysFile,
) -> Result<(), String> {
    // Validate the merged set (keys made through the API stay) before writing.
    let raw: store::Raw = store::read_pipe(&c.layout)
        .query_async(con)
        .await
        .map_err(|e| e.to_string())?;
    let (state, sources) = store::decode(raw)?;
    let mut merged = file.clone();
    merged.keys.extend(
        state
            .file
            .keys
            .into_iter()
            .filter(|k| sources.get(&k.id) == Some(&Source::Api)),
    );
    let cfg = shared.current().config.clone();
    KeySet::build(
        &cfg.keys_file,
        &merged,
        &cfg.policy,
        &cfg.rate_limit.per_key,
        None,
    )
    .map_err(|e| e.to_string())?;
    let entries = file_entries(file, c.seal.as_deref())?;
    let l = &c.layout;
    let script = store::apply_file();
    let mut inv = script.prepare_invoke();
    inv.key(&l.epoch)
        .key(&l.keys)
        .key(&l.revs)
        .key(&l.names)
        .key(&l.version)
        .key(&l.changes)
        .key(&l.file_revision)
        .key(&l.api);
    inv.arg(epoch)
        .arg("")
        .arg(applied.to_string())
        .arg(file.revision.unwrap_or(0).to_string())
        .arg("");
    for (id, lname, json) in &entries {
        inv.arg(id).arg(lname).arg(json);
    }
    let (outcome, _v): (String, u64) = inv.invoke_async(con).await.map_err(|e| e.to_string())?;
    match outcome.as_str() {
        // `moved`: another replica applied a file meanwhile; the next look decides.
        "ok" | "moved" => Ok(()),
        _ => Err(format!("refused by the cluster store: {outcome}")),
    }
}
