//! Real container runtimes driving our plugins as their users drive them: Debian's podman
//! (CNI backend) and containerd's CRI (through a small CRI client of ours), each inside a
//! node network namespace and a private mount namespace, with all their state under temp
//! dirs and the host's own paths shielded.
//!
//! - [`host`]: the namespaces the runtimes run in, and what they wrote outside their dirs;
//! - [`cgroup`]: the cgroup parent their containers go under (found and killed by it);
//! - [`image`]: images made offline from busybox-static;
//! - [`networks`]: our conflists and pools as `spiderctl apply` writes them, and the store;
//! - [`podman`], [`containerd`], [`cri`]: the runtimes and the CRI client;
//! - [`routing`]: what a pod's routing must be, checked inside its namespace.

pub mod cgroup;
pub mod containerd;
pub mod cri;
pub mod host;
pub mod image;
pub mod networks;
pub mod podman;
pub mod routing;
