//! Helpers for the end-to-end tests: run `spreadagg` roles as real processes, read the lines
//! they announce on stdout (bound addresses), send them SIGTERM and time their exit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A running `spreadagg` process.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    log: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_spreadagg")
}

impl Proc {
    /// Starts `spreadagg <args>` with its admin server on a free loopback port; stderr (the
    /// logs) goes to `<dir>/<name>.log`.
    pub fn spawn(name: &str, dir: &Path, args: &[&str]) -> Proc {
        Self::spawn_in(name, dir, dir, args)
    }

    /// As `spawn`, with `cwd` as the working directory.
    pub fn spawn_in(name: &str, dir: &Path, cwd: &Path, args: &[&str]) -> Proc {
        Self::spawn_with(name, dir, cwd, args, &[])
    }

    /// As `spawn_in`, with extra environment variables.
    pub fn spawn_with(
        name: &str,
        dir: &Path,
        cwd: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(binary())
            .args(args)
            .args(["--admin-addr", "127.0.0.1:0", "--log-format", "text"])
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .env_remove("NATS_URL")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn spreadagg");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name: name.to_owned(),
            child,
            lines: rx,
            seen: Vec::new(),
            log,
        }
    }

    /// Waits for an announced line starting with `prefix` and returns the rest of it.
    pub async fn announced(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.seen.iter().find(|l| l.starts_with(prefix)) {
                return line[prefix.len()..].trim().to_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(line)) => self.seen.push(line),
                _ => panic!(
                    "{} never announced {prefix:?}; log:\n{}",
                    self.name,
                    self.log_text()
                ),
            }
        }
    }

    /// The simulator's endpoints: exchange -> (ws_url, rest_url).
    pub async fn simulator_endpoints(
        &mut self,
        exchanges: &[&str],
    ) -> HashMap<String, (String, String)> {
        let mut out = HashMap::new();
        for ex in exchanges {
            let rest = self.announced(&format!("simulating {ex} ")).await;
            let mut parts = rest.split_whitespace();
            let ws = parts.next().expect("ws url").to_owned();
            let http = parts.next().expect("rest url").to_owned();
            out.insert((*ex).to_owned(), (ws, http));
        }
        out
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends SIGTERM and waits for the exit; returns the status and how long it took.
    pub async fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM failed");
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => (status, started.elapsed()),
            _ => panic!(
                "{} did not exit within {within:?} of SIGTERM; log:\n{}",
                self.name,
                self.log_text()
            ),
        }
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => status,
            _ => panic!(
                "{} did not exit within {within:?}; log:\n{}",
                self.name,
                self.log_text()
            ),
        }
    }

    /// The admin address the process announced.
    pub async fn admin(&mut self) -> String {
        self.announced("listening admin ").await
    }
}

/// Starts `spreadagg ingest` for one exchange against the simulator endpoint `(ws, rest)`,
/// over NATS at `url`, with `filters` (`--symbols ..` or `--min-volume ..`).
pub fn ingest(
    dir: &Path,
    exchange: &str,
    (ws, rest): (&str, &str),
    url: &str,
    filters: &[&str],
) -> Proc {
    let mut args = vec![
        "ingest",
        "--exchange",
        exchange,
        "--ws-url",
        ws,
        "--rest-url",
        rest,
        "--nats-url",
        url,
    ];
    args.extend_from_slice(filters);
    Proc::spawn(&format!("ingest-{exchange}"), dir, &args)
}

/// GET on the admin server: (status, body).
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path).await
}

/// A minimal HTTP/1.1 client for the admin endpoints (one request, `Connection: close`).
pub async fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls until `check` is true or the timeout passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A WebSocket client of the gateway.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to the gateway at `addr` and sends one subscribe request.
pub async fn subscribe(addr: &str, request: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("ws connect");
    ws.send(Message::text(request)).await.expect("subscribe");
    ws
}

/// The next spread point the gateway sends (other frames are skipped), within `within`.
pub async fn next_spread(ws: &mut Ws, within: Duration) -> serde_json::Value {
    let read = async {
        loop {
            let frame = ws
                .next()
                .await
                .expect("the gateway closed the WebSocket")
                .expect("ws frame");
            if let Message::Text(t) = frame {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
                if v["type"] == "spread" {
                    return v;
                }
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("a spread point in time")
}
