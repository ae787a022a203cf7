//! Configuration files. Every role's configuration is a typed struct with
//! `#[serde(deny_unknown_fields)]`; the binary layers flags and environment variables (through
//! clap) over an optional TOML file over the defaults, then validates the result at start.

use std::path::Path;

use serde::de::DeserializeOwned;

/// The configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Reads a TOML file into `T`; with no path, `T::default()`.
///
/// # Errors
/// When the file cannot be read, is not TOML, or names a field `T` does not have.
pub fn load_file<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        window: u32,
    }

    #[test]
    fn unknown_fields_are_refused() {
        let dir = std::env::temp_dir().join(format!("spreadagg-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good.toml");
        std::fs::write(&good, "window = 7\n").expect("write");
        assert_eq!(
            load_file::<Sample>(Some(&good)).expect("parses"),
            Sample { window: 7 }
        );
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "windw = 7\n").expect("write");
        assert!(matches!(
            load_file::<Sample>(Some(&bad)),
            Err(ConfigError::Parse { .. })
        ));
        assert_eq!(
            load_file::<Sample>(None).expect("default"),
            Sample::default()
        );
    }
}
