//! Network-namespace test harness.
//!
//! Builds node / fabric / pod topologies out of throw-away network namespaces
//! and drives CNI plugins through a real libcni client (the Go `cnidriver`).
//! Every `ip` command targets a namespace made here; the root namespace's
//! network configuration is never touched.

pub mod agent;
mod cmd;
pub mod conflist;
pub mod driver;
pub mod etcd;
pub mod mountns;
pub mod netns;
pub mod paths;
pub mod plugins;
pub mod probe;
pub mod rail_plan;
pub mod runtimes;
pub mod scenario;
pub mod state;
pub mod topology;

pub use driver::{exec_plugin, CniEnv, Driver, Invocation, Op, Outcome};
pub use netns::Netns;
pub use plugins::{PluginDir, Source};
pub use topology::{gateway_ip, master_name, new_pod, Fabric, Rail};
