//! `keygate cluster status`, `keygate keys export` and `keygate logs` in cluster
//! mode: printing what the cluster store says.

use crate::cli::args::ClusterCommand;
use crate::cli::output;
use crate::config::Config;
use crate::control::cluster::{self, ClusterConfig};

/// `keygate logs` in cluster mode (newest first; `--follow` is not supported).
pub(crate) fn cli_logs(
    cfg: &ClusterConfig,
    filter: &crate::observe::logs::Filter,
    limit: usize,
    json: bool,
) -> Result<(), String> {
    let records = cluster::logs::query_blocking(cfg, filter, limit)?;
    for r in records {
        if json {
            output::line(&r.to_string());
        } else {
            output::line(&format!(
                "{}  {:<8} {:<7} {} {}  {}  {}",
                r["ts"].as_str().unwrap_or(""),
                r["node"].as_str().unwrap_or(""),
                r["method"].as_str().unwrap_or(""),
                r["status"],
                r["path"].as_str().unwrap_or(""),
                r["key_name"].as_str().unwrap_or("-"),
                r["reason"]
                    .as_str()
                    .or(r["decision"].as_str())
                    .unwrap_or(""),
            ));
        }
    }
    Ok(())
}

/// `keygate cluster status` and `keygate keys export`.
pub(crate) fn cli(config: &Config, cmd: ClusterCommand) -> Result<(), String> {
    let Some(cfg) = &config.cluster else {
        return Err("this config has no cluster: section".into());
    };
    match cmd {
        ClusterCommand::Status { json } => {
            let v = cluster::status::status_blocking(cfg);
            if json {
                output::line(&v.to_string());
                return Ok(());
            }
            output::line(&format!(
                "cluster {}: redis {}, version {}",
                cfg.name,
                if v["redis"]["up"].as_bool() == Some(true) {
                    format!(
                        "up ({:.1} ms)",
                        v["redis"]["rtt_ms"].as_f64().unwrap_or(0.0)
                    )
                } else {
                    "DOWN".to_string()
                },
                v["version"]
            ));
            let mut rows = vec![vec![
                "NODE".into(),
                "VERSION".into(),
                "LAST SEEN".into(),
                "STALE".into(),
            ]];
            for r in v["replicas"].as_array().into_iter().flatten() {
                rows.push(vec![
                    r["node"].as_str().unwrap_or("").to_string(),
                    r["version"].to_string(),
                    r["last_seen"].as_str().unwrap_or("").to_string(),
                    format!("{:.1}s", r["stale_seconds"].as_f64().unwrap_or(0.0)),
                ]);
            }
            output::table(&rows);
            Ok(())
        }
        ClusterCommand::Export { output } => {
            let text = cluster::write::export(config)?;
            match output {
                None => {
                    output::line(text.trim_end());
                    Ok(())
                }
                Some(p) => crate::keys::write::write_atomic(&p, &text).map_err(|e| e.to_string()),
            }
        }
    }
}
