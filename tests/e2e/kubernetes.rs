//! What the Helm chart relies on, run as Kubernetes runs it: `spreadagg drain` as the preStop
//! hook (the role drains and exits, the hook returns once it has), `spreadagg streams` as the
//! hook Job against a real nats-server, and bad admin-token configuration refused at start.

use std::process::Stdio;
use std::time::Duration;

use spreadagg_testkit::NatsServer;
use spreadagg_testkit::kube_api::KubeApiMock;
use tokio::process::Command;

use crate::support::{Proc, binary, eventually, http_get};

/// Runs `spreadagg <args>` to completion; returns its exit code and stdout.
async fn run(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .args(["--log-format", "text"])
        .env_remove("NATS_URL")
        .env_remove("SPREADAGG_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("finishes")
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prestop_drain_command_returns_once_the_role_has_stopped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut all = Proc::spawn("all", dir.path(), &["all", "--listen", "127.0.0.1:0"]);
    let admin = all.admin().await;
    eventually("ready", Duration::from_secs(30), || async {
        http_get(&admin, "/readyz").await.0 == 200
    })
    .await;
    // The admin address from the environment, as the chart gives it to the role; waiting for
    // the exit, as an operator does by hand (the preStop hook returns once the drain starts).
    let (code, stdout, stderr) = run(
        &["drain", "--wait", "10"],
        &[("SPREADAGG_ADMIN_ADDR", &admin)],
    )
    .await;
    assert_eq!(code, 0, "drain: {stdout}\n{stderr}");
    assert!(stdout.contains("draining"), "{stdout}");
    assert!(stdout.contains("stopped after"), "{stdout}");
    let status = all.wait_exit(Duration::from_secs(1)).await;
    assert!(status.success(), "exit {status}; log:\n{}", all.log_text());
    // A second hook finds nothing listening: the role is already gone, which is success.
    let (code, stdout, _) = run(&["drain"], &[("SPREADAGG_ADMIN_ADDR", &admin)]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("already stopped"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_token_the_hook_drains_with_it_and_nothing_drains_without_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = [("SPREADAGG_ADMIN_TOKEN", "t0ken")];
    let mut all = Proc::spawn_with(
        "all",
        dir.path(),
        dir.path(),
        &["all", "--listen", "127.0.0.1:0"],
        &token,
    );
    let admin = all.admin().await;
    eventually("ready", Duration::from_secs(30), || async {
        http_get(&admin, "/readyz").await.0 == 200
    })
    .await;
    let addr = [("SPREADAGG_ADMIN_ADDR", admin.as_str())];
    let (code, _, stderr) = run(&["drain"], &addr).await;
    assert_eq!(code, 1, "no token, no drain: {stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    let (status, body) = http_get(&admin, "/readyz").await;
    assert_ne!(
        body.trim(),
        "draining",
        "a refused drain drains nothing ({status})"
    );
    // As the chart runs the hook: the pod's own token, a short delay, no wait.
    let (code, stdout, stderr) = run(&["drain", "--delay", "0.2"], &[addr[0], token[0]]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("waiting 200 ms before draining"),
        "{stdout}"
    );
    assert!(stdout.contains("draining"), "{stdout}");
    let status = all.wait_exit(Duration::from_secs(6)).await;
    assert!(status.success(), "exit {status}; log:\n{}", all.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_job_creates_and_updates_the_streams_on_nats() {
    let nats = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("spreadagg.toml");
    let write = |max_age: u32| {
        std::fs::write(
            &config,
            format!(
                "[streams]\nmax_age = {max_age}\nmax_bytes = 10485760\nduplicate_window = 60\n"
            ),
        )
        .expect("config");
    };
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let config_arg = config.to_str().expect("utf-8").to_owned();
    for max_age in [3600, 7200] {
        write(max_age);
        let (code, stdout, stderr) = run(
            &["streams", "--config", &config_arg],
            &[("NATS_URL", &nats.url())],
        )
        .await;
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        assert!(stdout.contains("MD_TICKS"), "{stdout}");
        for name in ["MD_TICKS", "MD_TRADES", "MD_SPREADS", "MD_SIGNALS"] {
            let mut stream = js.get_stream(name).await.expect("stream exists");
            let info = stream.info().await.expect("info");
            assert_eq!(
                info.config.max_age,
                Duration::from_secs(u64::from(max_age)),
                "{name}"
            );
            assert_eq!(info.config.max_bytes, 10 << 20, "{name}");
        }
    }
    // Without a NATS URL there is nothing to create: bad configuration, exit 2.
    let (code, _, stderr) = run(&["streams"], &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--nats-url"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_admin_token_fails_at_start_before_binding() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("token");
    std::fs::write(&empty, "\n").expect("write");
    let empty = empty.to_str().expect("utf-8").to_owned();
    let missing = dir
        .path()
        .join("absent")
        .to_str()
        .expect("utf-8")
        .to_owned();
    for (args, envs) in [
        (
            vec![
                "engine",
                "--admin-addr",
                "127.0.0.1:0",
                "--admin-token-file",
                empty.as_str(),
            ],
            vec![],
        ),
        (
            vec![
                "engine",
                "--admin-addr",
                "127.0.0.1:0",
                "--admin-token-file",
                missing.as_str(),
            ],
            vec![],
        ),
        (
            vec!["engine", "--admin-addr", "127.0.0.1:0"],
            vec![("SPREADAGG_ADMIN_TOKEN", " ")],
        ),
    ] {
        let (code, stdout, stderr) = run(&args, &envs).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            !stdout.contains("listening admin"),
            "bound before failing: {stdout}"
        );
        assert!(
            stderr.contains("--admin-token-file") || stderr.contains("SPREADAGG_ADMIN_TOKEN"),
            "the flag is named: {stderr}"
        );
    }
}

/// The lease state an archiver reports in `/health`.
async fn lease_state(admin: &str) -> String {
    let (_, body) = http_get(admin, "/health").await;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    health["components"]["lease"]["detail"]["state"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Two archivers with `[lease]` against a mocked Kubernetes API server (no API server can run
/// here; the mock keeps Leases with the real server's optimistic concurrency): one leads, the
/// other stands by, ready; when the leader stops it releases the Lease and the standby leads
/// within one attempt, not a lease duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_archivers_take_turns_on_the_lease() {
    let api = KubeApiMock::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let config = dir.path().join("spreadagg.toml");
    std::fs::write(
        &config,
        "[lease]\nname = \"spreadagg-archive\"\nnamespace = \"markets\"\nduration_s = 30\nrenew_every_s = 1\n",
    )
    .expect("config");
    let start = |identity: &str| {
        let store = format!("file://{}", dir.path().join(identity).display());
        Proc::spawn_with(
            identity,
            dir.path(),
            dir.path(),
            &[
                "archive",
                "--store",
                &store,
                "--config",
                config.to_str().expect("utf-8"),
            ],
            &[
                ("KUBECONFIG", kubeconfig.to_str().expect("utf-8")),
                ("HOSTNAME", identity),
            ],
        )
    };
    let mut a = start("archive-a");
    let a_admin = a.admin().await;
    eventually("a leads", Duration::from_secs(20), || async {
        lease_state(&a_admin).await == "leader"
    })
    .await;
    let mut b = start("archive-b");
    let b_admin = b.admin().await;
    eventually("b stands by, ready", Duration::from_secs(20), || async {
        lease_state(&b_admin).await == "standby" && http_get(&b_admin, "/readyz").await.0 == 200
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        lease_state(&b_admin).await,
        "standby",
        "b waits while a renews"
    );
    // What the "no archiver leads" alert reads.
    let leader = r#"spreadagg_lease_leader{lease="spreadagg-archive"}"#;
    assert!(
        http_get(&a_admin, "/metrics")
            .await
            .1
            .contains(&format!("{leader} 1"))
    );
    assert!(
        http_get(&b_admin, "/metrics")
            .await
            .1
            .contains(&format!("{leader} 0"))
    );
    assert_eq!(
        api.holder("spreadagg-archive").as_deref(),
        Some("archive-a")
    );

    let (status, _) = a.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "a: {status}; log:\n{}", a.log_text());
    let released = std::time::Instant::now();
    eventually(
        "b leads after a's release",
        Duration::from_secs(5),
        || async { lease_state(&b_admin).await == "leader" },
    )
    .await;
    assert!(
        released.elapsed() < Duration::from_secs(5),
        "b took over in {:?}, not after the 30 s duration",
        released.elapsed()
    );
    assert_eq!(
        api.holder("spreadagg-archive").as_deref(),
        Some("archive-b")
    );
    let (status, _) = b.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "b: {status}; log:\n{}", b.log_text());
    assert_eq!(
        api.holder("spreadagg-archive"),
        None,
        "released on a clean stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lease_settings_fail_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("spreadagg.toml");
    std::fs::write(
        &config,
        "[lease]\nname = \"l\"\nnamespace = \"n\"\nidentity = \"i\"\nduration_s = 15\nrenew_every_s = 10\n",
    )
    .expect("config");
    let (code, stdout, stderr) = run(
        &[
            "archive",
            "--admin-addr",
            "127.0.0.1:0",
            "--config",
            config.to_str().expect("utf-8"),
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(!stdout.contains("listening admin"), "{stdout}");
    assert!(stderr.contains("renew_every_s"), "{stderr}");
}
