//! One IP pool with SpiderIPPool semantics: its spec as written, validation, and the set of
//! addresses it may hand out.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::PoolError;
use crate::filters::Filters;
use crate::names::NameKind;
use crate::range::{parse_entry, to_u128, EntryError, Family, IpRanges};

/// The most addresses one pool may hand out: bounds the allocation bitmap at 2 MiB.
pub const MAX_POOL_SIZE: u128 = 1 << 24;

/// A SpiderIPPool `spec` as written (strings not yet parsed), the input of [`Pool::new`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolSpec {
    pub subnet: String,
    /// Single addresses and `a-b` ranges.
    pub ips: Vec<String>,
    /// Same syntax as `ips`.
    pub exclude_ips: Vec<String>,
    pub gateway: Option<String>,
    pub routes: Vec<RouteSpec>,
    /// 4 or 6; taken from the subnet when absent.
    pub ip_version: Option<u8>,
    pub disable: bool,
    pub default: bool,
    /// `nodeName`, `nodeAffinity`, `namespaceName`, `multusName`.
    pub filters: Filters,
}

/// One `spec.routes` entry as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct RouteSpec {
    pub dst: String,
    pub gw: String,
}

/// A validated route of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: IpAddr,
}

/// Something accepted but worth telling the operator once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolWarning {
    /// A CIDR with host bits set, used as its network.
    HostBitsSet {
        field: String,
        written: String,
        network: IpNet,
    },
    /// Nothing is left to allocate after the exclusions.
    NoAddresses,
}

impl fmt::Display for PoolWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolWarning::HostBitsSet {
                field,
                written,
                network,
            } => write!(
                f,
                "{field}: {written} has host bits set, using the network {network} \
                 (write {network} to silence this)"
            ),
            PoolWarning::NoAddresses => f.write_str(
                "no allocatable addresses (spec.ips minus excludeIPs and the gateway is empty): \
                 every allocation from it will fail",
            ),
        }
    }
}

/// A validated pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    name: String,
    subnet: IpNet,
    gateway: Option<IpAddr>,
    routes: Vec<Route>,
    disable: bool,
    default: bool,
    filters: Filters,
    allocatable: IpRanges,
}

impl Pool {
    /// Validates `spec` for the pool `name`. Warnings are returned, not printed: the caller
    /// logs them once.
    pub fn new(name: &str, spec: &PoolSpec) -> Result<(Pool, Vec<PoolWarning>), PoolError> {
        if !NameKind::Pool.is_valid(name) {
            return Err(PoolError::InvalidName { name: name.into() });
        }
        let mut warnings = Vec::new();
        let subnet = parse_cidr("spec.subnet", &spec.subnet, &mut warnings)?;
        let family = Family::of(subnet.addr());
        match spec.ip_version {
            None => {}
            Some(v) if v != 4 && v != 6 => {
                return Err(PoolError::BadIpVersion {
                    value: v.to_string(),
                })
            }
            Some(v) if v != family.version() => {
                return Err(PoolError::VersionMismatch {
                    ip_version: v,
                    subnet,
                    subnet_version: family.version(),
                })
            }
            Some(_) => {}
        }

        let ips = parse_ranges("spec.ips", &spec.ips, subnet)?;
        let excluded = parse_ranges("spec.excludeIPs", &spec.exclude_ips, subnet)?;
        let gateway = spec
            .gateway
            .as_deref()
            .map(|gw| parse_member("spec.gateway", gw, subnet))
            .transpose()?;
        let routes = spec
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| parse_route(i, route, subnet, &mut warnings))
            .collect::<Result<Vec<_>, _>>()?;

        let mut reserved: Vec<u128> = gateway.into_iter().map(to_u128).collect();
        // IPv4 subnets of /30 and wider have a network and a broadcast address; /31 and /32
        // (RFC 3021) use every address.
        if family == Family::V4 && subnet.prefix_len() < 31 {
            reserved.extend([to_u128(subnet.network()), to_u128(subnet.broadcast())]);
        }
        let reserved = IpRanges::new(family, reserved.into_iter().map(|v| (v, v)));
        let allocatable = ips.subtract(&excluded).subtract(&reserved);
        if allocatable.len() > MAX_POOL_SIZE {
            return Err(PoolError::TooLarge {
                size: allocatable.len(),
            });
        }
        if allocatable.is_empty() {
            warnings.push(PoolWarning::NoAddresses);
        }
        let pool = Pool {
            name: name.into(),
            subnet,
            gateway,
            routes,
            disable: spec.disable,
            default: spec.default,
            filters: spec.filters.clone(),
            allocatable,
        };
        Ok((pool, warnings))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subnet, with any host bits of the manifest cleared.
    pub fn subnet(&self) -> IpNet {
        self.subnet
    }

    pub fn family(&self) -> Family {
        self.allocatable.family()
    }

    pub fn gateway(&self) -> Option<IpAddr> {
        self.gateway
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// `spec.disable`: no new allocations.
    pub fn disabled(&self) -> bool {
        self.disable
    }

    /// `spec.default`: a pool to use when the IPAM config names none.
    pub fn is_default(&self) -> bool {
        self.default
    }

    /// Which nodes, namespaces and networks it serves.
    pub fn filters(&self) -> &Filters {
        &self.filters
    }

    /// `ips` minus `excludeIPs`, the gateway, the IPv4 network/broadcast addresses, and the
    /// SpiderReservedIPs of its family.
    pub fn allocatable(&self) -> &IpRanges {
        &self.allocatable
    }

    /// Takes `reserved` (addresses of SpiderReservedIPs) out of what it hands out.
    pub(crate) fn reserve(&mut self, reserved: &IpRanges) {
        if reserved.family() == self.family() {
            self.allocatable = self.allocatable.subtract(reserved);
        }
    }

    /// The same pool handing out only those of its addresses that are also in `only` (block
    /// mode: the addresses of the node's blocks).
    pub(crate) fn restricted_to(&self, only: &IpRanges) -> Pool {
        let outside = self.allocatable.subtract(only);
        Pool {
            allocatable: self.allocatable.subtract(&outside),
            ..self.clone()
        }
    }

    /// Number of allocatable addresses (at most [`MAX_POOL_SIZE`]).
    pub fn size(&self) -> u64 {
        self.allocatable.len() as u64
    }

    /// Changes whenever the allocatable set does; see [`IpRanges::fingerprint`].
    pub fn fingerprint(&self) -> u64 {
        self.allocatable.fingerprint()
    }
}

fn parse_cidr(
    field: &str,
    value: &str,
    warnings: &mut Vec<PoolWarning>,
) -> Result<IpNet, PoolError> {
    let net: IpNet = value.trim().parse().map_err(|_| PoolError::BadCidr {
        field: field.into(),
        value: value.into(),
    })?;
    if net.addr() != net.network() {
        warnings.push(PoolWarning::HostBitsSet {
            field: field.into(),
            written: value.into(),
            network: net.trunc(),
        });
    }
    Ok(net.trunc())
}

/// Checks that `ip` (written as `value` in `field`) is of the subnet's family and inside it.
fn check_member(field: &str, value: &str, ip: IpAddr, subnet: IpNet) -> Result<(), PoolError> {
    let family = Family::of(subnet.addr());
    if Family::of(ip) != family {
        return Err(PoolError::MixedFamily {
            field: field.into(),
            value: value.into(),
            family,
        });
    }
    if !subnet.contains(&ip) {
        return Err(PoolError::OutsideSubnet {
            field: field.into(),
            value: value.into(),
            subnet,
        });
    }
    Ok(())
}

fn parse_member(field: &str, value: &str, subnet: IpNet) -> Result<IpAddr, PoolError> {
    let ip = value.trim().parse().map_err(|_| PoolError::BadAddress {
        field: field.into(),
        value: value.into(),
        part: value.trim().into(),
    })?;
    check_member(field, value, ip, subnet)?;
    Ok(ip)
}

/// Parses a list in `ips` syntax whose addresses must all lie in `subnet`.
fn parse_ranges(field: &str, entries: &[String], subnet: IpNet) -> Result<IpRanges, PoolError> {
    let mut ranges = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let (start, end) = parse_entry(entry)
            .map_err(|e| entry_error(&field, entry, e, Family::of(subnet.addr())))?;
        // A subnet is contiguous, so both ends inside means the whole range is.
        check_member(&field, entry, start, subnet)?;
        check_member(&field, entry, end, subnet)?;
        ranges.push((to_u128(start), to_u128(end)));
    }
    Ok(IpRanges::new(Family::of(subnet.addr()), ranges))
}

/// The error for `entry` of `field` (in `ips` syntax); `family` is the one expected.
pub(crate) fn entry_error(field: &str, entry: &str, e: EntryError, family: Family) -> PoolError {
    let (field, value) = (field.to_string(), entry.to_string());
    match e {
        EntryError::NotAnAddress(part) => PoolError::BadAddress { field, value, part },
        EntryError::Reversed { start, end } => PoolError::Reversed {
            field,
            value,
            start: end.to_string(),
            end: start.to_string(),
        },
        // Whichever end differs, the message is the same.
        EntryError::MixedFamilies => PoolError::MixedFamily {
            field,
            value,
            family,
        },
    }
}

fn parse_route(
    i: usize,
    route: &RouteSpec,
    subnet: IpNet,
    warnings: &mut Vec<PoolWarning>,
) -> Result<Route, PoolError> {
    let field = format!("spec.routes[{i}].dst");
    let dst = parse_cidr(&field, &route.dst, warnings)?;
    let family = Family::of(subnet.addr());
    if Family::of(dst.addr()) != family {
        return Err(PoolError::MixedFamily {
            field,
            value: route.dst.clone(),
            family,
        });
    }
    let gw = parse_member(&format!("spec.routes[{i}].gw"), &route.gw, subnet)?;
    Ok(Route { dst, gw })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnet: &str, ips: &[&str]) -> PoolSpec {
        PoolSpec {
            subnet: subnet.into(),
            ips: ips.iter().map(|s| s.to_string()).collect(),
            ..PoolSpec::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn seed_pool_accepts_host_bits_with_a_warning() {
        let mut s = spec("172.16.11.0/16", &["172.16.11.1-172.16.11.200"]);
        s.gateway = Some("172.16.11.254".into());
        let (pool, warnings) = Pool::new("gpu1-net11", &s).unwrap();
        assert_eq!(pool.subnet(), "172.16.0.0/16".parse::<IpNet>().unwrap());
        assert_eq!(pool.size(), 200);
        assert_eq!(pool.family(), Family::V4);
        assert_eq!(warnings.len(), 1);
        let text = warnings[0].to_string();
        assert!(text.contains("spec.subnet: 172.16.11.0/16") && text.contains("172.16.0.0/16"));
    }

    #[test]
    fn excludes_gateway_excludeips_network_and_broadcast() {
        let mut s = spec("10.0.0.0/29", &["10.0.0.0-10.0.0.7"]);
        s.gateway = Some("10.0.0.1".into());
        s.exclude_ips = vec!["10.0.0.3-10.0.0.4".into()];
        let (pool, _) = Pool::new("p", &s).unwrap();
        assert_eq!(pool.allocatable().to_string(), "10.0.0.2,10.0.0.5-10.0.0.6");
    }

    #[test]
    fn slash_31_and_ipv6_keep_every_address() {
        let (pool, _) = Pool::new("p", &spec("10.0.0.0/31", &["10.0.0.0-10.0.0.1"])).unwrap();
        assert_eq!(pool.size(), 2);
        let (pool, _) = Pool::new("p", &spec("fd00::/120", &["fd00::-fd00::ff"])).unwrap();
        assert_eq!(pool.size(), 256);
        assert_eq!(pool.allocatable().index_of(ip("fd00::10")), Some(16));
    }

    #[test]
    fn validation_errors_name_field_and_value() {
        let cases: Vec<(PoolSpec, &str)> = vec![
            (
                spec("172.16.0.0/16", &["172.16.11.200-172.16.11.1"]),
                "spec.ips[0]: range 172.16.11.200-172.16.11.1 is reversed (its start is above its end): write 172.16.11.1-172.16.11.200",
            ),
            (
                spec("172.16.0.0/16", &["172.16.1.1", "10.0.0.1"]),
                "spec.ips[1]: 10.0.0.1 is outside subnet 172.16.0.0/16",
            ),
            (
                spec("172.16.0.0/16", &["fd00::1"]),
                "spec.ips[0]: fd00::1 is not IPv4 like the subnet",
            ),
            (
                spec("172.16.0.0/16", &["172.16.1.x"]),
                "spec.ips[0]: \"172.16.1.x\": \"172.16.1.x\" is not an IP address",
            ),
            (spec("172.16.0.0", &[]), "spec.subnet: \"172.16.0.0\" is not a CIDR"),
            (
                PoolSpec {
                    gateway: Some("10.1.0.1".into()),
                    ..spec("172.16.0.0/16", &[])
                },
                "spec.gateway: 10.1.0.1 is outside subnet 172.16.0.0/16",
            ),
            (
                PoolSpec {
                    exclude_ips: vec!["172.17.0.1".into()],
                    ..spec("172.16.0.0/16", &[])
                },
                "spec.excludeIPs[0]: 172.17.0.1 is outside subnet",
            ),
            (
                PoolSpec {
                    ip_version: Some(6),
                    ..spec("172.16.0.0/16", &[])
                },
                "spec.ipVersion: 6 does not match subnet 172.16.0.0/16: set ipVersion: 4",
            ),
            (
                PoolSpec {
                    ip_version: Some(5),
                    ..spec("172.16.0.0/16", &[])
                },
                "spec.ipVersion: 5 is not an IP version",
            ),
            (
                PoolSpec {
                    routes: vec![RouteSpec {
                        dst: "10.0.0.0/8".into(),
                        gw: "10.0.0.1".into(),
                    }],
                    ..spec("172.16.0.0/16", &[])
                },
                "spec.routes[0].gw: 10.0.0.1 is outside subnet",
            ),
            (
                spec("10.0.0.0/7", &["10.0.0.1-11.0.0.1"]),
                "16777217 allocatable addresses is above the limit of 16777216: split the pool",
            ),
        ];
        for (s, expected) in cases {
            let err = Pool::new("p", &s).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
        let err = Pool::new("Bad_Name", &spec("10.0.0.0/8", &[])).unwrap_err();
        assert!(err
            .to_string()
            .contains("\"Bad_Name\" is not a valid pool name"));
    }

    #[test]
    fn empty_pool_is_accepted_with_a_warning() {
        let (pool, warnings) = Pool::new("p", &spec("10.0.0.0/24", &[])).unwrap();
        assert_eq!(pool.size(), 0);
        assert_eq!(warnings, vec![PoolWarning::NoAddresses]);
    }

    #[test]
    fn exactly_the_size_limit_is_accepted() {
        let s = spec("10.0.0.0/7", &["10.0.0.1-11.0.0.0"]);
        let (pool, _) = Pool::new("p", &s).unwrap();
        assert_eq!(u128::from(pool.size()), MAX_POOL_SIZE);
    }
}
