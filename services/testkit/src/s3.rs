//! [`S3Server`]: a real S3-compatible server for the archive's object-store tests, moto's
//! server mode (`moto_server`, from the PyPI package `moto[server]` that `scripts/test`
//! installs into the project venv), on a free loopback port, killed on drop. It keeps objects
//! in memory, so a restart would lose them: an outage is simulated by pausing the process
//! (SIGSTOP, requests hang as on a partitioned network) and resuming it.
//!
//! The binary is found at `$MOTO_SERVER_BIN`, then `.venv/bin/moto_server`, then `PATH`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestkitError;

/// Credentials moto accepts (any are); region the tests use.
pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";
pub const REGION: &str = "us-east-1";

/// A running moto S3 server owned by a test.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    port: u16,
    paused: bool,
    log: tempfile::NamedTempFile,
}

/// Path of the `moto_server` binary.
///
/// # Errors
/// When none can be found.
pub fn moto_server_binary() -> Result<PathBuf, TestkitError> {
    if let Some(p) = std::env::var_os("MOTO_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
    if venv.exists() {
        return Ok(venv);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.exists())
        .ok_or(TestkitError::MotoNotFound)
}

impl S3Server {
    /// Starts moto on a free loopback port and waits until it answers.
    ///
    /// # Errors
    /// When the binary is missing or the server does not come up within 30 s.
    pub fn start() -> Result<Self, TestkitError> {
        let binary = moto_server_binary()?;
        // Ask the OS for a free port, then hand it to moto (a short race, harmless in tests).
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = tempfile::NamedTempFile::new()?;
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log.reopen()?)
            .spawn()?;
        let server = Self {
            child,
            port,
            paused: false,
            log,
        };
        let deadline = Duration::from_secs(30);
        let started = Instant::now();
        while started.elapsed() < deadline {
            if server.request("GET", "/").is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(TestkitError::NoPort(deadline))
    }

    /// `http://127.0.0.1:<port>`: the `AWS_ENDPOINT_URL` / `aws_endpoint` to use.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `object_store` options that reach this server: endpoint, plain HTTP, the test
    /// credentials and region.
    pub fn store_options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".to_owned()),
            ("aws_access_key_id", ACCESS_KEY.to_owned()),
            ("aws_secret_access_key", SECRET_KEY.to_owned()),
            ("aws_region", REGION.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The same as environment variables, for a `spreadagg` process.
    pub fn env(&self) -> Vec<(String, String)> {
        self.store_options()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect()
    }

    /// Creates a bucket (moto takes unsigned requests).
    ///
    /// # Errors
    /// When the server refuses.
    pub fn create_bucket(&self, name: &str) -> Result<(), TestkitError> {
        let status = self.request("PUT", &format!("/{name}"))?;
        if status == 200 {
            Ok(())
        } else {
            Err(TestkitError::Http(format!(
                "creating bucket {name}: HTTP {status}"
            )))
        }
    }

    /// Stops answering (SIGSTOP): connections are accepted by the kernel but nothing is
    /// served, as behind a partition.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn pause(&mut self) -> Result<(), TestkitError> {
        self.signal("-STOP")?;
        self.paused = true;
        Ok(())
    }

    /// Answers again (SIGCONT); the objects are all still there.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn resume(&mut self) -> Result<(), TestkitError> {
        self.signal("-CONT")?;
        self.paused = false;
        Ok(())
    }

    /// What the server logged, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn signal(&self, which: &str) -> Result<(), TestkitError> {
        let status = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(TestkitError::Http(format!("kill {which} failed: {status}")))
        }
    }

    /// One bodiless HTTP/1.1 request; the status code.
    fn request(&self, method: &str, path: &str) -> Result<u16, TestkitError> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| TestkitError::Http("malformed status line".into()))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if self.paused {
            let _ = self.signal("-CONT");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
