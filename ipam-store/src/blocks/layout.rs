//! How a pool is cut into blocks: a block is the pool's addresses between two multiples of
//! the block size, so a block's identity (its first address) does not move when the pool is
//! edited, and blocks of one size never overlap.
// What only the lease side (leased.rs) uses is unused in a build without the etcd client.
#![cfg_attr(not(feature = "etcd"), allow(dead_code))]

use std::net::IpAddr;

use crate::pool::Pool;
use crate::range::{from_u128, to_u128, IpRanges};

/// The first address of the block holding `ip`.
pub(crate) fn start_of(ip: IpAddr, size: u32) -> IpAddr {
    let value = to_u128(ip);
    from_u128(cni::Family::of(ip), value - value % u128::from(size))
}

/// The last address of the block starting at `start`.
pub(crate) fn last_of(start: IpAddr, size: u32) -> IpAddr {
    from_u128(
        cni::Family::of(start),
        to_u128(start) + u128::from(size) - 1,
    )
}

/// Whether `ip` lies in the block starting at `start`.
pub(crate) fn holds(start: IpAddr, size: u32, ip: IpAddr) -> bool {
    cni::Family::of(ip) == cni::Family::of(start) && start_of(ip, size) == start
}

/// The pool's addresses in the blocks starting at `starts`.
pub(crate) fn addresses(pool: &Pool, starts: &[IpAddr], size: u32) -> IpRanges {
    let blocks = IpRanges::new(
        pool.family(),
        starts
            .iter()
            .map(|&s| (to_u128(s), to_u128(last_of(s, size)))),
    );
    pool.allocatable()
        .subtract(&pool.allocatable().subtract(&blocks))
}

/// The first address of every block holding at least one of the pool's addresses, in
/// address order.
pub(crate) fn starts(pool: &Pool, size: u32) -> Vec<IpAddr> {
    let size = u128::from(size);
    let mut out: Vec<IpAddr> = Vec::new();
    for (first, last) in pool.allocatable().ranges() {
        let (first, last) = (to_u128(first), to_u128(last));
        let mut block = first - first % size;
        while block <= last {
            let start = from_u128(pool.family(), block);
            if out.last() != Some(&start) {
                out.push(start);
            }
            block += size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::PoolSpec;

    fn pool(ips: &[&str], exclude: &[&str]) -> Pool {
        let spec = PoolSpec {
            subnet: "10.0.0.0/24".into(),
            ips: ips.iter().map(|s| s.to_string()).collect(),
            exclude_ips: exclude.iter().map(|s| s.to_string()).collect(),
            ..PoolSpec::default()
        };
        Pool::new("p", &spec).unwrap().0
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_are_aligned_and_the_last_may_be_short() {
        let pool = pool(&["10.0.0.1-10.0.0.200"], &["10.0.0.20-10.0.0.40"]);
        let starts = starts(&pool, 16);
        // 0..192 by 16, minus the block 32-47 that keeps 41-47, so all 13 stay.
        assert_eq!(starts.len(), 13);
        assert_eq!(starts[0], ip("10.0.0.0"));
        assert_eq!(starts[12], ip("10.0.0.192"));
        let first = addresses(&pool, &starts[..1], 16);
        assert_eq!(first.len(), 15, "10.0.0.0 is the network address");
        let last = addresses(&pool, &starts[12..], 16);
        assert_eq!(last.len(), 9, "192..200");
        let excluded = addresses(&pool, &[ip("10.0.0.16")], 16);
        assert_eq!(excluded.len(), 4, "16..19; 20.. are excluded");
        let all = addresses(&pool, &starts, 16);
        assert_eq!(all, *pool.allocatable());
        assert_eq!(start_of(ip("10.0.0.47"), 16), ip("10.0.0.32"));
        assert_eq!(last_of(ip("10.0.0.32"), 16), ip("10.0.0.47"));
        assert!(holds(ip("10.0.0.32"), 16, ip("10.0.0.47")));
        assert!(!holds(ip("10.0.0.32"), 16, ip("10.0.0.48")));
    }

    #[test]
    fn a_block_wholly_excluded_is_not_a_block() {
        let pool = pool(&["10.0.0.1-10.0.0.63"], &["10.0.0.16-10.0.0.31"]);
        assert_eq!(
            starts(&pool, 16),
            [ip("10.0.0.0"), ip("10.0.0.32"), ip("10.0.0.48")]
        );
    }
}
