//! The `worker` binary: refuses to start on a schema that is behind, then runs until SIGINT or
//! SIGTERM.

use shared::settings::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init("info,worker=info,apalis=warn");
    let settings = Settings::from_env()?;
    worker::startup::ensure_schema_current(&settings.database_direct_url).await?;
    shared::preflight::refuse_misconfigured(&settings).await?;
    let app = worker::startup::Application::build(settings).await?;
    app.run_until_stopped(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
