//! CNI protocol library: spec types for 0.3.0-1.1.0, the `CNI_*` environment, errors and
//! their codes, the plugin entry point, IPAM delegation, netns entry and rtnetlink.

pub mod env;
pub mod error;
pub mod family;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod ipam;
pub mod log;
pub mod netlink;
pub mod netns;
pub mod skel;
pub mod types;
pub mod version;

pub use env::{Command, Env};
pub use error::Error;
pub use family::Family;
pub use skel::{Invocation, Plugin};
pub use types::{CniResult, Interface, IpConfig, Route};
pub use version::CniVersion;
