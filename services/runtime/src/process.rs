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

/// A container's memory as its cgroup counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupMemory {
    /// The limit (`None`: unlimited).
    pub limit: Option<u64>,
    /// The working set: usage less inactive file cache (what the kernel cannot simply drop),
    /// as the kubelet computes it for eviction.
    pub working_set: u64,
}

impl CgroupRoot {
    /// The memory limit in bytes, if one is set: cgroup v2 `memory.max` ("max" = none), else
    /// cgroup v1 `memory/memory.limit_in_bytes`. Inside a container the process's own cgroup is
    /// mounted at the root, which is where Kubernetes puts the pod's limit.
    pub fn memory_limit_bytes(&self) -> Option<u64> {
        self.memory().and_then(|m| m.limit)
    }

    /// This process's cgroup memory (its own cgroup, from `/proc/self/cgroup`, falling back
    /// to the root as a namespaced container sees it); `None` when no cgroup is readable.
    pub fn memory(&self) -> Option<CgroupMemory> {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        self.memory_of(&own)
    }

    /// As [`CgroupRoot::memory`] for a given `/proc/<pid>/cgroup` text.
    pub fn memory_of(&self, proc_cgroup: &str) -> Option<CgroupMemory> {
        let line_path = |pred: &dyn Fn(&str) -> bool| {
            proc_cgroup.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                pred(controllers).then(|| path.trim_start_matches('/').to_owned())
            })
        };
        // cgroup v2: one hierarchy, the "0::<path>" line.
        let v2_dirs = [
            line_path(&|c: &str| c.is_empty()).map(|p| self.0.join(p)),
            Some(self.0.clone()),
        ];
        for dir in v2_dirs.into_iter().flatten() {
            if let Some(current) = read_u64(&dir.join("memory.current")) {
                let limit = read_trimmed(&dir.join("memory.max")).and_then(|v| v.parse().ok());
                let inactive = stat_field(&dir.join("memory.stat"), "inactive_file");
                return Some(CgroupMemory {
                    limit,
                    working_set: current.saturating_sub(inactive),
                });
            }
        }
        // cgroup v1: the memory controller's hierarchy under `memory/`.
        let v1_dirs = [
            line_path(&|c: &str| c.split(',').any(|c| c == "memory"))
                .map(|p| self.0.join("memory").join(p)),
            Some(self.0.join("memory")),
        ];
        for dir in v1_dirs.into_iter().flatten() {
            if let Some(usage) = read_u64(&dir.join("memory.usage_in_bytes")) {
                let limit =
                    read_u64(&dir.join("memory.limit_in_bytes")).filter(|&v| v < V1_UNLIMITED);
                let inactive = stat_field(&dir.join("memory.stat"), "total_inactive_file");
                return Some(CgroupMemory {
                    limit,
                    working_set: usage.saturating_sub(inactive),
                });
            }
        }
        None
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

/// A `name value` line of a cgroup `memory.stat` file (0 when absent).
fn stat_field(path: &Path, name: &str) -> u64 {
    read_trimmed(path)
        .and_then(|text| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == name).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
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
        let (_d, v2) = root_with(&[("memory.max", "536870912\n"), ("memory.current", "1000\n")]);
        assert_eq!(v2.memory_limit_bytes(), Some(512 << 20));
        let (_d, v2_none) = root_with(&[("memory.max", "max\n"), ("memory.current", "1\n")]);
        assert_eq!(v2_none.memory_limit_bytes(), None);
        let (_d, v1) = root_with(&[
            ("memory/memory.limit_in_bytes", "268435456\n"),
            ("memory/memory.usage_in_bytes", "1\n"),
        ]);
        assert_eq!(v1.memory_limit_bytes(), Some(256 << 20));
        let (_d, v1_none) = root_with(&[
            ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory/memory.usage_in_bytes", "1\n"),
        ]);
        assert_eq!(v1_none.memory_limit_bytes(), None);
        let (_d, neither) = root_with(&[]);
        assert_eq!(neither.memory_limit_bytes(), None);
        let (_d, garbage) = root_with(&[("memory.max", "lots\n"), ("memory.current", "1\n")]);
        assert_eq!(garbage.memory_limit_bytes(), None);
    }

    #[test]
    fn the_working_set_is_usage_less_inactive_files_in_the_process_s_own_cgroup() {
        let (_d, v2) = root_with(&[
            ("kubepods/pod1/memory.max", "1000000\n"),
            ("kubepods/pod1/memory.current", "900000\n"),
            (
                "kubepods/pod1/memory.stat",
                "anon 500000\ninactive_file 300000\nactive_file 1\n",
            ),
            ("memory.current", "5\n"),
        ]);
        assert_eq!(
            v2.memory_of("0::/kubepods/pod1\n"),
            Some(CgroupMemory {
                limit: Some(1_000_000),
                working_set: 600_000
            })
        );
        // A namespaced container sees "/": the root.
        assert_eq!(v2.memory_of("0::/\n").map(|m| m.working_set), Some(5));
        let (_d, v1) = root_with(&[
            ("memory/docker/abc/memory.limit_in_bytes", "2000\n"),
            ("memory/docker/abc/memory.usage_in_bytes", "1500\n"),
            (
                "memory/docker/abc/memory.stat",
                "cache 10\ntotal_inactive_file 400\n",
            ),
        ]);
        assert_eq!(
            v1.memory_of("12:pids:/docker/abc\n4:memory:/docker/abc\n"),
            Some(CgroupMemory {
                limit: Some(2000),
                working_set: 1100
            })
        );
        assert_eq!(
            v1.memory_of("4:memory:/elsewhere\n"),
            None,
            "no such cgroup, no root files"
        );
    }
}
