//! A node inside the test process, on a free port, with the rate limits lifted.

use super::workspace_root;
use server::chat::ChatService;
use server::configuration::Settings;
use server::startup::Application;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A node serving on loopback, stopped when dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    pub chat: Arc<ChatService>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestApp {
    /// The node's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a node with default settings on a free port.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a node on a free port after `adjust` changed its settings.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    // The node's logs, at the level RUST_LOG asks (errors only by default), per test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut settings = Settings::with_addr("127.0.0.1:0".parse().expect("literal address"));
    settings.site_root = Some(workspace_root().join("target/site"));
    settings.lifecycle.shutdown_timeout_secs = 1;
    // Tests send bursts far above a person's pace; the limits have tests of their own.
    let unlimited = std::num::NonZeroU32::new(1_000_000).expect("not zero");
    (settings.limits.message_rate, settings.limits.message_burst) = (unlimited, unlimited);
    (settings.limits.renames_per_minute, settings.limits.rename_burst) = (unlimited, unlimited);
    (settings.limits.history_rate, settings.limits.history_burst) = (unlimited, unlimited);
    adjust(&mut settings);
    settings.validate().expect("test settings are valid");
    let app = Application::build(settings).await.expect("the node starts");
    let addr = app.local_addr();
    let chat = app.chat();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp { addr, chat, stop: Some(stop) }
}
