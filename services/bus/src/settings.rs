//! Stream settings: the retention limits and duplicate window every stream gets.

use std::time::Duration;

/// Where JetStream keeps messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    #[default]
    File,
    Memory,
}

/// Limits applied to each of the four streams. When a limit is reached the oldest messages
/// are discarded (`DiscardPolicy::Old`): market data past its retention is worth less than new.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Messages older than this are removed.
    #[serde(with = "secs")]
    pub max_age: Duration,
    /// Per stream; 0 = unlimited (not advised).
    pub max_bytes: i64,
    /// Per stream; 0 = unlimited.
    pub max_messages: i64,
    /// Window within which a repeated `Nats-Msg-Id` is dropped.
    #[serde(with = "secs")]
    pub duplicate_window: Duration,
    /// JetStream replicas (3 in production clusters).
    pub replicas: usize,
    pub storage: StorageKind,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: 1 << 30,
            max_messages: 0,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            storage: StorageKind::File,
        }
    }
}

/// The in-process bus keeps messages in this process's memory: its retention is capped so
/// `spreadagg all` stays flat instead of filling a day's worth of data.
const IN_PROCESS_MAX_AGE: Duration = Duration::from_secs(15 * 60);
const IN_PROCESS_MAX_BYTES: i64 = 64 << 20;

impl StreamSettings {
    /// These settings with retention capped for the in-process bus (15 minutes, 64 MiB per
    /// stream).
    pub fn for_in_process(&self) -> Self {
        let max_bytes = if self.max_bytes > 0 {
            self.max_bytes.min(IN_PROCESS_MAX_BYTES)
        } else {
            IN_PROCESS_MAX_BYTES
        };
        Self {
            max_age: self.max_age.min(IN_PROCESS_MAX_AGE),
            max_bytes,
            ..self.clone()
        }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
