//! What every role shares: configuration loading, telemetry (logs and metrics), the admin HTTP
//! server (`/healthz`, `/readyz`, `/metrics`, `/health`, `POST /drain`), the health registry
//! roles report into, and graceful shutdown.

pub mod admin;
pub mod config;
pub mod health;
pub mod net;
pub mod process;
pub mod shutdown;
pub mod telemetry;
pub mod traces;

pub use health::{Component, Health};
pub use shutdown::Shutdown;
