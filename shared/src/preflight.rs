//! What both services check before they serve: a connection that can never work as configured
//! (a certificate or host name that does not verify, a URL the driver refuses) stops the
//! process with the reason, instead of retrying forever behind a `/readyz` 503. A server that
//! is merely down is waited for, as always: the pools and the queue reconnect by themselves.

use std::time::Duration;

use crate::settings::Settings;

const PROBE: Duration = Duration::from_secs(5);

/// `Err` names the variable to fix and why; unreachable servers are only logged.
pub async fn refuse_misconfigured(settings: &Settings) -> anyhow::Result<()> {
    let urls = [
        ("DATABASE_URL", &settings.database_url),
        ("DATABASE_DIRECT_URL", &settings.database_direct_url),
    ];
    for (name, url) in urls {
        if name == "DATABASE_DIRECT_URL" && url == &settings.database_url {
            continue;
        }
        match tokio::time::timeout(PROBE, crate::db::connect(url)).await {
            Ok(Err(e)) if e.is_permanent() => anyhow::bail!("{name}: {e}"),
            Ok(Err(e)) => tracing::warn!(error = %e, "{name}: Postgres not reachable yet"),
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    let client = crate::queue::redis_client(&settings.redis_url, settings.redis_ca_file.as_deref())
        .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
    match tokio::time::timeout(PROBE, client.get_multiplexed_async_connection()).await {
        Ok(Err(e)) if crate::tls::is_refusal(&e) => anyhow::bail!(
            "REDIS_URL: the Redis server's TLS certificate was refused: {}",
            crate::tls::error_chain(&e)
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "REDIS_URL: Redis not reachable yet"),
        Ok(Ok(_)) | Err(_) => {}
    }
    Ok(())
}
