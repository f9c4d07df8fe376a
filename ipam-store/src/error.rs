//! The crate's errors. Each message names the thing (file, pool, field, value, path) and says
//! how to fix it, because these strings reach an operator through a CNI error or a CLI.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use crate::names::NameKind;
use crate::pool::MAX_POOL_SIZE;

/// A problem with one pool's definition; `field` is a path such as `spec.ips[2]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("{field} is required")]
    Missing { field: String },

    #[error("{field} must be {expected}, not {value}")]
    WrongType {
        field: String,
        /// As JSON: strings quoted.
        value: String,
        expected: String,
    },

    /// A field's own check said what is wrong (`reason` names the value and the fix).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },

    #[error("metadata.name {name:?} is not a valid pool name: {rule}", rule = NameKind::Pool.rule())]
    InvalidName { name: String },

    #[error("{field}: {value:?} is not a CIDR: write address/prefix, e.g. 172.16.0.0/16")]
    BadCidr { field: String, value: String },

    #[error(
        "{field}: {value:?}: {part:?} is not an IP address: write one address (172.16.11.1) \
         or a range (172.16.11.1-172.16.11.200)"
    )]
    BadAddress {
        field: String,
        value: String,
        part: String,
    },

    #[error(
        "{field}: range {value} is reversed (its start is above its end): write {start}-{end}"
    )]
    Reversed {
        field: String,
        value: String,
        start: String,
        end: String,
    },

    #[error(
        "{field}: {value} is not {family} like the subnet: a pool holds one IP family, put the \
         other family in a pool of its own"
    )]
    MixedFamily {
        field: String,
        value: String,
        family: crate::Family,
    },

    #[error("{field}: {value} is outside subnet {subnet}: fix the address or widen the subnet")]
    OutsideSubnet {
        field: String,
        value: String,
        subnet: IpNet,
    },

    #[error("spec.ipVersion: {value} is not an IP version: write 4 or 6")]
    BadIpVersion { value: String },

    #[error(
        "spec.ipVersion: {ip_version} does not match subnet {subnet}: set ipVersion: {subnet_version} \
         or leave it out"
    )]
    VersionMismatch {
        ip_version: u8,
        subnet: IpNet,
        subnet_version: u8,
    },

    #[error(
        "{size} allocatable addresses is above the limit of {MAX_POOL_SIZE}: split the pool into \
         smaller pools (narrower spec.ips ranges)"
    )]
    TooLarge { size: u128 },

    #[error("{field} is not supported: {why}")]
    Unsupported { field: String, why: &'static str },

    #[error("{field}: {value:?} is not an operator: write In, NotIn, Exists or DoesNotExist")]
    BadOperator { field: String, value: String },

    #[error(
        "{field}: operator {operator} {}", if *takes {
            "needs a non-empty list of values"
        } else {
            "takes no values: drop them"
        }
    )]
    OperatorValues {
        field: String,
        operator: String,
        takes: bool,
    },
}

impl From<crate::fields::FieldProblem> for PoolError {
    fn from(p: crate::fields::FieldProblem) -> PoolError {
        use crate::fields::Problem;
        let field = p.field;
        match p.problem {
            Problem::Missing => PoolError::Missing { field },
            Problem::WrongType { value, expected } => PoolError::WrongType {
                field,
                value,
                expected,
            },
            // Pool specs read every field they do not know past (see manifest::spec).
            Problem::Unknown { known } => PoolError::Invalid {
                field,
                reason: format!("not a field read here: the fields are {}", known.join(", ")),
            },
            Problem::Other(reason) => PoolError::Invalid { field, reason },
        }
    }
}

/// A problem loading manifests: reading, parsing, or a pool in them.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{path} is larger than {limit} bytes, too big for a manifest: split it into several files"
    )]
    TooLarge { path: PathBuf, limit: u64 },

    #[error("{source_name}: cannot parse as {format}: {reason}")]
    Syntax {
        source_name: String,
        format: &'static str,
        reason: String,
    },

    #[error("{source_name}: document {document}: {reason}")]
    Document {
        source_name: String,
        document: usize,
        reason: String,
    },

    #[error(
        "{source_name}: pool {pool}: apiVersion {api_version:?} is not supported: use \
         spiderpool.spidernet.io/v2beta1"
    )]
    ApiVersion {
        source_name: String,
        pool: String,
        api_version: String,
    },

    #[error("{source_name}: {} {pool}: {error}", if *kind == "SpiderIPPool" { "pool" } else { kind })]
    Pool {
        source_name: String,
        /// SpiderIPPool or SpiderReservedIP.
        kind: &'static str,
        pool: String,
        /// Boxed: it is the largest variant by far, and errors travel in every `Result`.
        #[source]
        error: Box<PoolError>,
    },

    #[error(
        "pool {pool} is defined twice, in {first} and in {second}: names of pools and reserved \
         IPs must be unique, rename or delete one"
    )]
    Duplicate {
        pool: String,
        first: String,
        second: String,
    },
}

/// A failure of the allocation store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "pool {pool} is exhausted: every address is held (size {size}); release unused ones \
         (spiderctl gc) or add addresses to its spec.ips"
    )]
    Exhausted { pool: String, size: u64 },

    #[error(
        "pool {pool} is disabled (spec.disable: true): set disable: false or use another pool"
    )]
    Disabled { pool: String },

    /// A requested address that this pool cannot give to the attachment.
    #[error("{ip} cannot be given from pool {pool}: {why}")]
    Refused {
        pool: String,
        ip: IpAddr,
        why: Refusal,
    },

    #[error("invalid {what} {value:?}: {rule}", rule = what.rule())]
    InvalidName { what: NameKind, value: String },

    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A store file that is not what the store writes; `reason` ends with the fix.
    #[error("store file {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    /// etcd did not answer, has no leader, or timed out: retrying later is the cure.
    #[error(
        "etcd {endpoints} is unreachable: {reason} (check store.endpoints and that the members \
         run; a retry is safe: each change is one transaction)"
    )]
    Unavailable { endpoints: String, reason: String },

    /// etcd answered with a refusal a retry does not cure.
    #[error("etcd {endpoints}: cannot {op} it: {reason}")]
    Etcd {
        endpoints: String,
        op: &'static str,
        reason: String,
    },

    /// Concurrent changes kept winning the races this operation's transactions ran.
    #[error(
        "{what}: {attempts} attempts in a row lost a race with concurrent changes (a nearly \
         full or very busy pool)"
    )]
    Contended { what: String, attempts: u32 },

    /// Nodes configured with different `store.block_size` for one pool.
    #[error(
        "pool {pool} is leased in blocks of {theirs} addresses on etcd, but this node's \
         store.block_size is {ours}: every node must use the same store.block_size for a pool \
         (0 is per-address mode)"
    )]
    BlockSize {
        pool: String,
        theirs: u32,
        ours: u32,
    },

    /// Block mode: no free block and no room in shared ones, but other nodes' blocks may have
    /// room; they were asked to share them, which they do at their next contact with etcd.
    #[error(
        "pool {pool} has no free block and no free address in shared blocks; asked node(s) \
         {nodes} to share blocks, which each does at its next contact with etcd (its agent's \
         pass or spiderctl gc): retry then"
    )]
    Asked { pool: String, nodes: String },

    /// Block mode: the node has not reached etcd for longer than it may allocate without it.
    #[error(
        "this node has not reached etcd for {silent_s} s, longer than the {offline_s} s it may \
         allocate from its blocks without it (after which gc --dead-node may give them to \
         other nodes): {reason}"
    )]
    Offline {
        silent_s: u64,
        offline_s: u64,
        reason: String,
    },

    /// `gc --dead-node` for a node that reached etcd too recently.
    #[error(
        "node {node} reached etcd {silent_s} s ago: gc --dead-node takes a node's blocks only \
         after {needed_s} s of silence (its store.offline_s plus a margin for clocks, or \
         --dead-for if longer), since until then it may still allocate from them: make sure \
         it is gone for good, then wait"
    )]
    NodeAlive {
        node: String,
        silent_s: u64,
        needed_s: u64,
    },

    /// Block mode without the etcd client: etcd was needed and handing the call over to the
    /// binary that has it failed.
    #[error("{what}: {source}")]
    Handover {
        what: String,
        #[source]
        source: io::Error,
    },

    /// An etcd key under the store's prefix that is not what the store writes.
    #[error("etcd key {key} is damaged: {reason}")]
    DamagedKey { key: String, reason: String },
}

/// Why a pool cannot give a requested address ([`StoreError::Refused`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not one of the pool's allocatable addresses (outside `spec.ips`, in `excludeIPs`, or
    /// the gateway).
    NotInPool,
    /// Another attachment holds it.
    HeldBy {
        network: String,
        container_id: String,
        ifname: String,
    },
    /// The attachment already holds another address of the pool.
    HoldsOther(IpAddr),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotInPool => f.write_str(
                "it is not one of the pool's addresses (spec.ips minus excludeIPs and the gateway)",
            ),
            Refusal::HeldBy {
                network,
                container_id,
                ifname,
            } => write!(
                f,
                "held by container {container_id} ifname {ifname} in network {network}"
            ),
            Refusal::HoldsOther(ip) => write!(
                f,
                "this attachment already holds {ip} there; release it first (DEL)"
            ),
        }
    }
}

impl StoreError {
    /// Wraps an I/O error with what was being done and to which path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}
