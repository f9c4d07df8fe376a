//! A node's default directories, defined once: the plugin reads its pools and keeps its file
//! store there unless the IPAM config says otherwise, and spiderctl's flags default to them.

/// The SpiderIPPool manifests: the IPAM config's `ippool_dir`.
pub const DEFAULT_IPPOOL_DIR: &str = "/etc/cni/net.d/spiderpool/ippools";
/// The file store: the IPAM config's `data_dir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/spiderpool";
/// Where kubelet's runtime reads the network configuration lists.
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// This node's labels, for pools with `nodeAffinity`: the IPAM config's `node_labels_file`.
pub const DEFAULT_NODE_LABELS_FILE: &str = "/etc/cni/net.d/spiderpool/node-labels.json";
