//! The PostgreSQL floor: what raw SQL does on this machine (`../shared/bench/pg_floor.sh`),
//! measured in the same run so figures compare as ratios.
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

pub fn script(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        ["../shared/bench/pg_floor.sh", "shared/bench/pg_floor.sh"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    })
}

pub async fn measure(script: &PathBuf, url: &str, seconds: u64) -> anyhow::Result<Value> {
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .arg(url)
        .arg(seconds.to_string())
        .output()
        .await
        .with_context(|| format!("cannot run {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "pg_floor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(text.lines().last().unwrap_or("{}"))?)
}
