use anyhow::Context;
use clap::Parser;
use server::configuration::Settings;
use server::startup::{Application, shutdown_signal};
use server::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    telemetry::init(settings.log_format);
    settings.validate().context("invalid configuration")?;
    // Every connection is a file descriptor: take all the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open file limit"),
        Err(err) => tracing::warn!(%err, "cannot raise the open file limit"),
    }
    let app = Application::build(settings).await.context("cannot start the chatroom")?;
    tracing::info!(url = %app.url(), "chatroom is listening");
    app.run_until_stopped(shutdown_signal()).await;
    tracing::info!("chatroom stopped");
    Ok(())
}
