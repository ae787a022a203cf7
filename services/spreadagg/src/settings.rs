//! The effective configuration: defaults, then the TOML file, then environment variables and
//! flags (clap reads both). Validated before any role starts; dumped at `/config` with the
//! NATS credentials redacted.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use spreadagg_archive::ArchiveConfig;
use spreadagg_bus::StreamSettings;
use spreadagg_engine::EngineConfig;
use spreadagg_gateway::GatewayConfig;
use spreadagg_ingest::IngestConfig;
use spreadagg_simulate::SimConfig;

use spreadagg_runtime::admin::AdminToken;
use spreadagg_runtime::config::ConfigError;

use crate::cli::{ArchiveAction, ArchiveArgs, Cli, Role};
use crate::lease::LeaseSettings;

/// Everything configurable, as the file spells it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// NATS URL; absent means the in-process bus.
    pub nats_url: Option<String>,
    /// Admin HTTP address.
    pub admin_addr: SocketAddr,
    /// File holding the admin token (see `admin_token`); the environment variable
    /// `SPREADAGG_ADMIN_TOKEN` gives the token itself and wins.
    pub admin_token_file: Option<PathBuf>,
    /// Seconds the roles may take to drain after SIGTERM or `/drain` before the process
    /// exits without them. Below the 5 s target, well inside Kubernetes' grace period.
    pub drain_timeout_s: f64,
    /// Limits of the four streams (created or updated at connect).
    pub streams: StreamSettings,
    pub ingest: IngestConfig,
    pub engine: EngineConfig,
    pub archive: ArchiveConfig,
    pub gateway: GatewayConfig,
    pub simulate: SimConfig,
    /// Leader election for the archive role (off while `name` is empty).
    pub lease: LeaseSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            nats_url: None,
            admin_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            admin_token_file: None,
            drain_timeout_s: 4.5,
            streams: StreamSettings::default(),
            ingest: IngestConfig::default(),
            engine: EngineConfig::default(),
            archive: ArchiveConfig {
                store: "./data".into(),
                ..ArchiveConfig::default()
            },
            gateway: GatewayConfig::default(),
            simulate: SimConfig::default(),
            lease: LeaseSettings::default(),
        }
    }
}

impl Settings {
    /// Layers the file and the command line over the defaults.
    ///
    /// # Errors
    /// When the file cannot be read or parsed.
    pub fn load(cli: &Cli) -> Result<Self, spreadagg_runtime::config::ConfigError> {
        let mut s: Settings = spreadagg_runtime::config::load_file(cli.global.config.as_deref())?;
        if let Some(url) = &cli.global.nats_url {
            s.nats_url = Some(url.clone());
        }
        if let Some(addr) = cli.global.admin_addr {
            s.admin_addr = addr;
        }
        if let Some(path) = &cli.global.admin_token_file {
            s.admin_token_file = Some(path.clone());
        }
        match &cli.role {
            Role::Ingest(a) => {
                let i = &mut s.ingest;
                if let Some(v) = a.exchange {
                    i.exchange = Some(v);
                }
                if let Some(v) = &a.symbols {
                    i.symbols.clone_from(v);
                }
                if let Some(v) = &a.quotes {
                    i.quotes = v.iter().map(|q| q.to_ascii_uppercase()).collect();
                }
                if a.min_volume.is_some() {
                    i.min_volume = a.min_volume;
                }
                if a.max_volume.is_some() {
                    i.max_volume = a.max_volume;
                }
                if a.ws_url.is_some() {
                    i.ws_url.clone_from(&a.ws_url);
                }
                if a.rest_url.is_some() {
                    i.rest_url.clone_from(&a.rest_url);
                }
                if let Some(v) = a.shard {
                    i.shard = v;
                }
            }
            Role::Archive(a) => {
                let verify_store = match &a.action {
                    Some(ArchiveAction::Verify(v)) => v.store.as_ref(),
                    None => None,
                };
                if let Some(v) = verify_store.or(a.store.as_ref()) {
                    s.archive.store.clone_from(v);
                }
            }
            Role::Replay(a) => {
                if let Some(v) = &a.store {
                    s.archive.store.clone_from(v);
                }
            }
            Role::Gateway(a) => {
                if let Some(v) = a.listen {
                    s.gateway.listen = v;
                }
                if let Some(v) = a.grpc_listen {
                    s.gateway.grpc_listen = Some(v);
                }
            }
            Role::Simulate(a) => {
                for (ex, port) in &a.ports {
                    s.simulate.ports.insert(*ex, *port);
                }
            }
            Role::All(a) => {
                if let Some(v) = &a.store {
                    s.archive.store.clone_from(v);
                }
                if let Some(v) = a.listen {
                    s.gateway.listen = v;
                }
            }
            Role::Engine(a) => {
                if let Some(v) = a.shard {
                    s.engine.shard = v;
                }
            }
            Role::Roles | Role::Drain(_) | Role::Streams(_) => {}
        }
        if matches!(cli.role, Role::Engine(_) | Role::All(_)) {
            // Engine bounds, thresholds and shard fail at start, before any port is bound.
            s.engine
                .limits()
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if let Ok(id) = std::env::var("SPREADAGG_REPLICA_ID") {
            s.archive.replica_id = id;
        }
        if matches!(cli.role, Role::Archive(_) | Role::All(_) | Role::Replay(_)) {
            // Archive limits, the store URL and its options fail at start, before any port
            // is bound (building a cloud client needs no network; the store is probed later).
            s.archive
                .validate()
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if matches!(cli.role, Role::Archive(ArchiveArgs { action: None, .. }))
            && let Some(lease) = s.lease.resolve()?
        {
            // Bad election settings fail at start, before any port is bound. A holder that
            // lost the lease drains before anyone may take over only if the drain fits in the
            // last third of the duration.
            let third = lease.duration.as_secs_f64() / 3.0;
            if third <= s.drain_timeout_s {
                return Err(ConfigError::Invalid(format!(
                    "[lease] duration_s ({}) must be more than 3 x drain_timeout_s ({})",
                    lease.duration.as_secs_f64(),
                    s.drain_timeout_s
                )));
            }
        }
        Ok(s)
    }

    /// The admin token: `SPREADAGG_ADMIN_TOKEN` if set, else the contents of
    /// `admin_token_file`, else none (loopback callers only).
    ///
    /// # Errors
    /// When either is set but empty, or the file cannot be read: a token the operator meant
    /// to set must never silently become "no token".
    pub fn admin_token(&self) -> Result<Option<AdminToken>, ConfigError> {
        self.admin_token_from(std::env::var("SPREADAGG_ADMIN_TOKEN").ok())
    }

    fn admin_token_from(&self, env: Option<String>) -> Result<Option<AdminToken>, ConfigError> {
        if let Some(value) = env {
            return AdminToken::new(&value).map(Some).ok_or_else(|| {
                ConfigError::Invalid("SPREADAGG_ADMIN_TOKEN is set but empty".into())
            });
        }
        let Some(path) = &self.admin_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::Invalid(format!(
                "--admin-token-file {}: cannot read: {e}",
                path.display()
            ))
        })?;
        AdminToken::new(&text).map(Some).ok_or_else(|| {
            ConfigError::Invalid(format!("--admin-token-file {}: empty", path.display()))
        })
    }

    /// The configuration as `/config` shows it: credentials in the NATS URL redacted.
    pub fn redacted(&self) -> serde_json::Value {
        let mut copy = self.clone();
        copy.nats_url = copy
            .nats_url
            .as_deref()
            .map(spreadagg_bus::jetstream::redact);
        // Credentials belong in the environment, but one put in a store option is not shown.
        for (key, value) in &mut copy.archive.store_options {
            let key = key.to_ascii_lowercase();
            if ["secret", "key", "token", "password", "sas", "credential"]
                .iter()
                .any(|word| key.contains(word))
            {
                *value = "<redacted>".into();
            }
        }
        serde_json::to_value(copy).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use spreadagg_model::ExchangeId;

    use super::*;

    fn load(file: &str, args: &[&str]) -> Result<Settings, spreadagg_runtime::config::ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("spreadagg.toml");
        std::fs::write(&path, file).expect("write");
        let path = path.to_str().expect("utf-8").to_owned();
        let mut argv = vec!["spreadagg"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--config", &path]);
        Settings::load(&Cli::try_parse_from(argv).expect("arguments parse"))
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let file = "admin_addr = \"127.0.0.1:9999\"\n[engine]\nmax_staleness_ms = 1234\n[ingest]\nexchange = \"okx\"\nmin_volume = 1.0\n";
        let s = load(
            file,
            &["ingest", "--admin-addr", "127.0.0.1:1", "--min-volume", "5"],
        )
        .expect("valid");
        assert_eq!(
            s.admin_addr,
            SocketAddr::from(([127, 0, 0, 1], 1)),
            "flag beats file"
        );
        assert_eq!(s.ingest.min_volume, Some(5.0), "flag beats file");
        assert_eq!(
            s.ingest.exchange,
            Some(ExchangeId::Okx),
            "file beats default"
        );
        assert_eq!(s.engine.max_staleness_ms, 1234, "file beats default");
        assert_eq!(s.engine.band_points, 200, "default");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(load("[engine]\nmax_stalenes_ms = 1\n", &["engine"]).is_err());
        let e = load("[engine]\nmax_ticks = 0\n", &["engine"]).expect_err("invalid bound");
        assert!(e.to_string().contains("engine.max_ticks"), "{e}");
        let e = load("[engine]\nshard = { index = 2, count = 2 }\n", &["engine"])
            .expect_err("bad shard");
        assert!(e.to_string().contains("engine.shard"), "{e}");
        let s = load("", &["engine", "--shard", "1/3"]).expect("valid");
        assert_eq!((s.engine.shard.index, s.engine.shard.count), (1, 3));
        assert!(load("[ingest]\nexchange = \"ftx\"\n", &["engine"]).is_err());
        assert!(load("[ingest]\nsymbols = [\"btc-usdt\"]\n", &["engine"]).is_err());
    }

    #[test]
    fn the_admin_token_comes_from_the_environment_or_a_file_and_is_never_silently_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").expect("write");
        let with_file = Settings {
            admin_token_file: Some(file.clone()),
            ..Settings::default()
        };
        let secret = |t: Option<AdminToken>| t.map(|t| t.secret().to_owned());
        assert_eq!(
            secret(Settings::default().admin_token_from(None).expect("ok")),
            None
        );
        assert_eq!(
            secret(with_file.admin_token_from(None).expect("ok")).as_deref(),
            Some("from-file")
        );
        assert_eq!(
            secret(with_file.admin_token_from(Some("env".into())).expect("ok")).as_deref(),
            Some("env"),
            "the environment wins"
        );
        assert!(with_file.admin_token_from(Some("  ".into())).is_err());
        std::fs::write(&file, "\n").expect("write");
        let e = with_file.admin_token_from(None).expect_err("empty file");
        assert!(e.to_string().contains("--admin-token-file"), "{e}");
        let missing = Settings {
            admin_token_file: Some(dir.path().join("absent")),
            ..Settings::default()
        };
        assert!(missing.admin_token_from(None).is_err());
    }

    #[test]
    fn the_config_dump_redacts_nats_credentials() {
        let s = Settings {
            nats_url: Some("nats://svc:secret@nats.internal:4222".into()),
            ..Settings::default()
        };
        let dump = s.redacted().to_string();
        assert!(!dump.contains("secret"), "{dump}");
        assert!(dump.contains("nats://***@nats.internal:4222"), "{dump}");
    }
}
