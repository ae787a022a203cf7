//! The process's own gauges, refreshed on the metrics upkeep timer: resident memory, the
//! container's memory limit (from its cgroup), readiness and the build.
//!
//! `spreadagg_process_resident_memory_bytes` against `spreadagg_process_memory_limit_bytes` is
//! what the "memory near the limit" alert compares: the kernel kills a pod at its cgroup limit,
//! so the limit read here is the one that counts, not the machine's memory.

use std::path::Path;

use crate::Health;
use crate::health::rss_bytes;

/// Where the memory limit of this process's cgroup is read from.
#[derive(Debug, Clone)]
pub struct CgroupRoot(pub std::path::PathBuf);

impl Default for CgroupRoot {
    fn default() -> Self {
        Self("/sys/fs/cgroup".into())
    }
}

/// cgroup v1 reports "no limit" as a huge number (the largest page-aligned `i64`); anything at
/// or above this is taken as unlimited.
const V1_UNLIMITED: u64 = 1 << 62;

impl CgroupRoot {
    /// The memory limit in bytes, if one is set: cgroup v2 `memory.max` ("max" = none), else
    /// cgroup v1 `memory/memory.limit_in_bytes`. Inside a container the process's own cgroup is
    /// mounted at the root, which is where Kubernetes puts the pod's limit.
    pub fn memory_limit_bytes(&self) -> Option<u64> {
        if let Some(v2) = read_trimmed(&self.0.join("memory.max")) {
            return v2.parse().ok();
        }
        let v1: u64 = read_trimmed(&self.0.join("memory/memory.limit_in_bytes"))?
            .parse()
            .ok()?;
        (v1 < V1_UNLIMITED).then_some(v1)
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Sets `spreadagg_build_info{version}` to 1; once at start.
pub fn record_build_info() {
    metrics::gauge!("spreadagg_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Refreshes the process gauges; called on the upkeep timer.
pub fn record(health: &Health, cgroup: &CgroupRoot) {
    metrics::gauge!("spreadagg_process_resident_memory_bytes").set(rss_bytes() as f64);
    // No limit: the gauge is never registered, rather than exported as a made-up number.
    if let Some(bytes) = cgroup.memory_limit_bytes() {
        metrics::gauge!("spreadagg_process_memory_limit_bytes").set(bytes as f64);
    }
    metrics::gauge!("spreadagg_ready").set(if health.is_ready() { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, CgroupRoot) {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, content) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, content).expect("write");
        }
        let root = CgroupRoot(dir.path().to_owned());
        (dir, root)
    }

    #[test]
    fn the_limit_comes_from_cgroup_v2_then_v1() {
        let (_d, v2) = root_with(&[("memory.max", "536870912\n")]);
        assert_eq!(v2.memory_limit_bytes(), Some(512 << 20));
        let (_d, v2_none) = root_with(&[("memory.max", "max\n")]);
        assert_eq!(v2_none.memory_limit_bytes(), None);
        let (_d, v1) = root_with(&[("memory/memory.limit_in_bytes", "268435456\n")]);
        assert_eq!(v1.memory_limit_bytes(), Some(256 << 20));
        let (_d, v1_none) = root_with(&[("memory/memory.limit_in_bytes", "9223372036854771712\n")]);
        assert_eq!(v1_none.memory_limit_bytes(), None);
        let (_d, neither) = root_with(&[]);
        assert_eq!(neither.memory_limit_bytes(), None);
        let (_d, garbage) = root_with(&[("memory.max", "lots\n")]);
        assert_eq!(garbage.memory_limit_bytes(), None);
    }
}
