//! A smoke run of the load tool (`chatroom-bench`), so that it keeps working: a few
//! clients for a few seconds against a real node started in this process.

use serde_json::Value;
use server::configuration::Settings;
use server::startup::Application;
use std::num::NonZeroU32;
use tokio::process::Command;
use tokio::sync::oneshot;

/// A node on a free loopback port, without rate limits; stopped when dropped.
struct Node {
    url: String,
    _stop: oneshot::Sender<()>,
}

impl Node {
    fn url(&self) -> String {
        self.url.clone()
    }
}

async fn spawn_app() -> Node {
    let mut settings = Settings::with_addr("127.0.0.1:0".parse().expect("literal address"));
    settings.lifecycle.shutdown_timeout_secs = 1;
    // The tool sends far faster than a person; the limits are tested elsewhere.
    let unlimited = NonZeroU32::new(1_000_000).expect("not zero");
    (settings.limits.message_rate, settings.limits.message_burst) = (unlimited, unlimited);
    (settings.limits.renames_per_minute, settings.limits.rename_burst) = (unlimited, unlimited);
    let app = Application::build(settings).await.expect("the node starts");
    let url = app.url();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Node { url, _stop: stop }
}

/// Runs the load tool with `args`; asserts a clean exit and returns its JSON report.
async fn clean_run(args: &[&str]) -> Value {
    let output =
        Command::new(env!("CARGO_BIN_EXE_chatroom-bench")).args(args).output().await.expect("run chatroom-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the run was not clean:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON")
}

#[tokio::test]
async fn the_load_tool_measures_rooms_beside_a_busy_one() {
    let app = spawn_app().await;
    let url = app.url();
    let report = clean_run(&[
        "rooms",
        "--url",
        &url,
        "--rooms",
        "3",
        "--members",
        "3",
        "--rate-per-room",
        "5",
        "--busy-members",
        "4",
        "--busy-rate",
        "10",
        "--duration-secs",
        "2",
    ])
    .await;
    assert_eq!(report["clients"], 13, "{report}");
    assert_eq!(report["sent"], 50, "3 rooms × 10 lines and 20 in the busy one: {report}");
    assert_eq!(report["expected"], 170, "each line to its own room's members: {report}");
    assert_eq!(report["received"], 170, "{report}");
    for zero in ["missing", "duplicates", "order_violations", "wrong_room", "disconnects", "connect_failures"] {
        assert_eq!(report[zero], 0, "{zero}: {report}");
    }
    assert!(report["busy_latency_ms_p99"].as_f64().is_some_and(|ms| ms > 0.0), "{report}");
}

#[tokio::test]
async fn the_load_tool_measures_a_short_fanout_run() {
    let app = spawn_app().await;
    let url = app.url();
    // The node runs in this test's process: its CPU is this process's.
    let pid = std::process::id().to_string();
    let report = clean_run(&[
        "fanout",
        "--url",
        &url,
        "--clients",
        "6",
        "--senders",
        "2",
        "--rate",
        "20",
        "--duration-secs",
        "2",
        "--server-pid",
        &pid,
    ])
    .await;
    assert_eq!(report["sent"], 40, "{report}");
    assert_eq!(report["expected"], 240, "{report}");
    assert_eq!(report["received"], 240, "{report}");
    for zero in ["missing", "duplicates", "order_violations", "disconnects", "connect_failures"] {
        assert_eq!(report[zero], 0, "{zero}: {report}");
    }
    assert!(report["latency_ms_p99"].as_f64().is_some_and(|ms| ms > 0.0), "{report}");
    assert!(report["server_cpu_secs"].as_f64().is_some_and(|secs| secs >= 0.0), "the node's CPU: {report}");
    assert!(report["server_cpu_us_per_delivery"].as_f64().is_some(), "{report}");
    assert!(report["redis_cpu_secs"].is_null(), "no Redis named: {report}");

    // It refuses targets off the loopback network.
    let refused = Command::new(env!("CARGO_BIN_EXE_chatroom-bench"))
        .args(["fanout", "--url", "http://10.1.2.3:3000", "--duration-secs", "1"])
        .output()
        .await
        .expect("run chatroom-bench");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only loopback targets"));
}

#[tokio::test]
async fn the_load_tool_ramps_the_rate_up_over_the_same_connections() {
    let app = spawn_app().await;
    let url = app.url();
    let report = clean_run(&[
        "rampup",
        "--url",
        &url,
        "--clients",
        "5",
        "--senders",
        "2",
        "--start-rate",
        "10",
        "--factor",
        "2",
        "--step-secs",
        "1",
        "--max-steps",
        "2",
    ])
    .await;
    assert_eq!(report["held_rate"], 20.0, "both steps held: {report}");
    let steps = report["steps"].as_array().expect("steps");
    let sent: Vec<_> = steps.iter().map(|step| step["sent"].as_u64()).collect();
    assert_eq!(sent, [Some(10), Some(20)], "{report}");
    for step in steps {
        assert_eq!(step["received"], step["expected"], "{step}");
        assert_eq!(step["missing"], 0, "{step}");
    }
}

#[tokio::test]
async fn the_load_tool_holds_idle_connections_and_measures_memory() {
    let app = spawn_app().await;
    // The node runs in this test's process: its memory is this process's.
    let pid = std::process::id().to_string();
    for per_process in ["100", "30"] {
        let url = app.url();
        let report = clean_run(&[
            "conns",
            "--url",
            &url,
            "--connections",
            "60",
            "--hold-secs",
            "1",
            "--server-pid",
            &pid,
            "--per-process",
            per_process,
        ])
        .await;
        assert_eq!((report["connected"].as_u64(), report["failures"].as_u64()), (Some(60), Some(0)), "{report}");
        assert!(report["server_rss_after_kib"].as_u64().is_some_and(|kib| kib > 0), "{report}");
    }
}

#[tokio::test]
async fn the_load_tool_soaks_a_node_with_resuming_clients() {
    let app = spawn_app().await;
    let url = app.url();
    let report = clean_run(&[
        "soak",
        "--url",
        &url,
        "--clients",
        "4",
        "--senders",
        "2",
        "--every-secs",
        "0.2",
        "--duration-secs",
        "10",
    ])
    .await;
    assert!(report["lines_seen"].as_u64().is_some_and(|n| n > 10), "{report}");
    assert_eq!(report["lines_sent"], report["lines_seen"], "{report}");
    for zero in ["lost", "duplicated", "out_of_order", "refused_but_delivered", "resets", "false_leaves"] {
        assert_eq!(report[zero], 0, "{zero}: {report}");
    }
}

#[tokio::test]
async fn the_load_tool_storms_from_many_addresses_and_kills_its_target() {
    let app = spawn_app().await;
    let url = app.url();
    // The node runs in this process: the process killed here stands in for it (the
    // clients' drops and resumes are measured by scripts/bench.sh with real nodes).
    let mut target = Command::new("sleep").arg("60").kill_on_drop(true).spawn().expect("start sleep");
    let pid = target.id().expect("a pid").to_string();
    let me = std::process::id().to_string();
    let report = clean_run(&[
        "storm",
        "--url",
        &url,
        "--clients",
        "30",
        "--senders",
        "3",
        "--room-size",
        "10",
        "--every-secs",
        "0.2",
        "--per-address",
        "4",
        "--kill-pid",
        &pid,
        "--before-secs",
        "1",
        "--within-secs",
        "2",
        "--server-pid",
        &me,
    ])
    .await;
    let status = target.wait().await.expect("the target ends");
    assert!(!status.success(), "the target was killed: {status}");
    assert_eq!((report["clients"].as_u64(), report["rooms"].as_u64()), (Some(30), Some(3)), "{report}");
    assert!(report["lines_seen"].as_u64().is_some_and(|n| n >= 10), "{report}");
    for zero in ["dropped", "lost", "duplicated", "out_of_order", "resets", "false_leaves", "failed_attempts"] {
        assert_eq!(report[zero], 0, "{zero}: {report}");
    }
    assert!(report["survivor_rss_peak_kib"].as_u64().is_some_and(|kib| kib > 0), "{report}");
}
