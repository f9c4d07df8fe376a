//! Sets of IP addresses as sorted, merged, disjoint inclusive ranges of `u128`.
//!
//! One representation serves IPv4 and IPv6 (an IPv4 address is its `u32` value widened). A
//! set maps its addresses to dense indexes `0..len` in address order, which is what the
//! allocation bitmap is laid over; both directions are binary searches over the ranges.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use cni::Family;

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The inverse of [`to_u128`]; callers only pass values of the family's width.
pub(crate) fn from_u128(family: Family, value: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// Why one `ips`/`excludeIPs` entry does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryError {
    /// This part of the entry is not an IP address.
    NotAnAddress(String),
    /// `a-b` with `a` above `b`.
    Reversed { start: IpAddr, end: IpAddr },
    /// `a-b` with one IPv4 and one IPv6 end.
    MixedFamilies,
}

/// Parses one entry of spiderpool's `ips` syntax: a single address or an inclusive range `a-b`
/// (whitespace around the parts is tolerated; no IP syntax contains `-`).
pub fn parse_entry(entry: &str) -> Result<(IpAddr, IpAddr), EntryError> {
    let parse = |part: &str| {
        part.trim()
            .parse::<IpAddr>()
            .map_err(|_| EntryError::NotAnAddress(part.trim().to_string()))
    };
    let (start, end) = match entry.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let ip = parse(entry)?;
            (ip, ip)
        }
    };
    if Family::of(start) != Family::of(end) {
        return Err(EntryError::MixedFamilies);
    }
    if to_u128(start) > to_u128(end) {
        return Err(EntryError::Reversed { start, end });
    }
    Ok((start, end))
}

/// A set of addresses of one family, kept as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpRanges {
    family: Family,
    ranges: Vec<(u128, u128)>,
    /// `offsets[i]` is the index of `ranges[i].0`: the number of addresses in earlier ranges.
    offsets: Vec<u128>,
}

impl IpRanges {
    /// Builds the set covering every given inclusive range; overlapping and adjacent ranges
    /// merge, and a range with start above end is empty.
    pub(crate) fn new(family: Family, ranges: impl IntoIterator<Item = (u128, u128)>) -> IpRanges {
        let mut input: Vec<(u128, u128)> = ranges.into_iter().filter(|(a, b)| a <= b).collect();
        input.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(input.len());
        for (start, end) in input {
            match merged.last_mut() {
                Some(last) if last.1 == u128::MAX || start <= last.1 + 1 => {
                    last.1 = last.1.max(end)
                }
                _ => merged.push((start, end)),
            }
        }
        IpRanges::from_normalized(family, merged)
    }

    /// Builds from ranges already sorted, disjoint and non-adjacent, or says they are not
    /// (used for ranges read back from a file, which may be damaged).
    pub(crate) fn from_sorted(family: Family, ranges: Vec<(u128, u128)>) -> Option<IpRanges> {
        let max = match family {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        };
        let well_formed = ranges.iter().all(|&(a, b)| a <= b && b <= max)
            && ranges
                .windows(2)
                .all(|w| w[0].1 < w[1].0 && w[1].0 - w[0].1 > 1);
        well_formed.then(|| IpRanges::from_normalized(family, ranges))
    }

    fn from_normalized(family: Family, ranges: Vec<(u128, u128)>) -> IpRanges {
        let mut next = 0u128;
        let offsets = ranges
            .iter()
            .map(|&(a, b)| {
                let offset = next;
                // Saturating: only the full IPv6 space overflows, and no pool gets near it.
                next = next.saturating_add(b - a).saturating_add(1);
                offset
            })
            .collect();
        IpRanges {
            family,
            ranges,
            offsets,
        }
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// The ranges as `u128` pairs, sorted and disjoint.
    pub(crate) fn raw_ranges(&self) -> &[(u128, u128)] {
        &self.ranges
    }

    /// The ranges as inclusive `(first, last)` address pairs, sorted and disjoint.
    pub fn ranges(&self) -> impl Iterator<Item = (IpAddr, IpAddr)> + '_ {
        self.ranges
            .iter()
            .map(|&(a, b)| (from_u128(self.family, a), from_u128(self.family, b)))
    }

    /// Number of addresses in the set.
    pub fn len(&self) -> u128 {
        match (self.ranges.last(), self.offsets.last()) {
            (Some(&(a, b)), Some(&offset)) => offset.saturating_add(b - a).saturating_add(1),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.locate(ip).is_some()
    }

    /// The position of `ip` in the set, in address order.
    pub fn index_of(&self, ip: IpAddr) -> Option<u64> {
        let (range, value) = self.locate(ip)?;
        u64::try_from(self.offsets[range] + (value - self.ranges[range].0)).ok()
    }

    /// The address at position `index`, the inverse of [`IpRanges::index_of`].
    pub fn ip_at(&self, index: u64) -> Option<IpAddr> {
        let index = u128::from(index);
        let range = self
            .offsets
            .partition_point(|&o| o <= index)
            .checked_sub(1)?;
        let (start, end) = self.ranges[range];
        let value = start.checked_add(index - self.offsets[range])?;
        (value <= end).then(|| from_u128(self.family, value))
    }

    /// The range holding `ip` and the address as `u128`.
    fn locate(&self, ip: IpAddr) -> Option<(usize, u128)> {
        if Family::of(ip) != self.family {
            return None;
        }
        let value = to_u128(ip);
        let range = self
            .ranges
            .partition_point(|&(start, _)| start <= value)
            .checked_sub(1)?;
        (value <= self.ranges[range].1).then_some((range, value))
    }

    /// The addresses of `self` that are not in `other` (which must be of the same family to
    /// remove anything).
    pub fn subtract(&self, other: &IpRanges) -> IpRanges {
        if other.family != self.family {
            return self.clone();
        }
        let mut out = Vec::with_capacity(self.ranges.len());
        let mut cut = other.ranges.iter().peekable();
        for &(start, end) in &self.ranges {
            let mut lo = start;
            // Skip removals wholly below this range; both lists are sorted.
            while cut.next_if(|&&(_, b)| b < lo).is_some() {}
            let mut covered = false;
            while let Some(&&(a, b)) = cut.peek() {
                if a > end {
                    break;
                }
                if a > lo {
                    out.push((lo, a - 1));
                }
                if b >= end {
                    covered = true;
                    break;
                }
                lo = b + 1;
                cut.next();
            }
            if !covered {
                out.push((lo, end));
            }
        }
        IpRanges::from_normalized(self.family, out)
    }

    /// A stable 64-bit FNV-1a hash of the family and the ranges: equal exactly when the
    /// index-to-address mapping is (barring collisions), and identical across builds and
    /// versions, unlike `std`'s `DefaultHasher`.
    pub fn fingerprint(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let bytes = std::iter::once(self.family.version()).chain(
            self.ranges
                .iter()
                .flat_map(|&(a, b)| a.to_be_bytes().into_iter().chain(b.to_be_bytes())),
        );
        bytes.fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        })
    }
}

impl fmt::Display for IpRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.ranges().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if a == b {
                write!(f, "{sep}{a}")?;
            } else {
                write!(f, "{sep}{a}-{b}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn v4(ranges: &[(u128, u128)]) -> IpRanges {
        IpRanges::new(Family::V4, ranges.iter().copied())
    }

    #[test]
    fn parses_single_and_range_entries() {
        assert_eq!(
            parse_entry("172.16.11.1-172.16.11.200"),
            Ok((ip("172.16.11.1"), ip("172.16.11.200")))
        );
        assert_eq!(
            parse_entry(" 10.0.0.7 "),
            Ok((ip("10.0.0.7"), ip("10.0.0.7")))
        );
        assert_eq!(
            parse_entry("fd00::1 - fd00::10"),
            Ok((ip("fd00::1"), ip("fd00::10")))
        );
    }

    #[test]
    fn rejects_bad_entries() {
        assert_eq!(
            parse_entry("172.16.11.200-172.16.11.1"),
            Err(EntryError::Reversed {
                start: ip("172.16.11.200"),
                end: ip("172.16.11.1")
            })
        );
        assert_eq!(
            parse_entry("10.0.0.1-fd00::1"),
            Err(EntryError::MixedFamilies)
        );
        assert_eq!(
            parse_entry("10.0.0.0/24"),
            Err(EntryError::NotAnAddress("10.0.0.0/24".into()))
        );
        assert_eq!(
            parse_entry("10.0.0.1-"),
            Err(EntryError::NotAnAddress("".into()))
        );
    }

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let set = v4(&[(10, 20), (21, 25), (5, 12), (40, 40), (30, 29)]);
        assert_eq!(set.raw_ranges(), &[(5, 25), (40, 40)]);
        assert_eq!(set.len(), 22);
    }

    #[test]
    fn subtract_cuts_holes_and_edges() {
        let set = v4(&[(1, 200)]);
        let cut = v4(&[(0, 1), (50, 60), (100, 100), (200, 300)]);
        assert_eq!(
            set.subtract(&cut).raw_ranges(),
            &[(2, 49), (61, 99), (101, 199)]
        );
        assert!(set.subtract(&v4(&[(0, 1000)])).is_empty());
    }

    #[test]
    fn index_round_trip_on_seed_range() {
        let (a, b) = parse_entry("172.16.11.1-172.16.11.200").unwrap();
        let set = IpRanges::new(Family::V4, [(to_u128(a), to_u128(b))]);
        assert_eq!(set.len(), 200);
        assert_eq!(set.index_of(ip("172.16.11.1")), Some(0));
        assert_eq!(set.index_of(ip("172.16.11.200")), Some(199));
        assert_eq!(set.index_of(ip("172.16.11.201")), None);
        assert_eq!(set.index_of(ip("fd00::1")), None);
        assert_eq!(set.ip_at(199), Some(ip("172.16.11.200")));
        assert_eq!(set.ip_at(200), None);
        assert_eq!(set.to_string(), "172.16.11.1-172.16.11.200");
    }

    #[test]
    fn huge_ipv6_sets_have_exact_length() {
        let set = IpRanges::new(Family::V6, [(0, u128::from(u64::MAX) + 5)]);
        assert_eq!(set.len(), u128::from(u64::MAX) + 6);
        assert_eq!(set.ip_at(3), Some(from_u128(Family::V6, 3)));
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        // Pinned (values computed independently): the bitmap on disk is keyed by it, so it
        // must never change across builds.
        assert_eq!(
            IpRanges::new(Family::V4, []).fingerprint(),
            0xaf63_b94c_8601_b113
        );
        assert_eq!(v4(&[(1, 200)]).fingerprint(), 0x4d3e_a9d7_b489_3e78);
        assert_ne!(v4(&[(1, 200)]).fingerprint(), v4(&[(1, 199)]).fingerprint());
        assert_ne!(
            v4(&[(1, 200)]).fingerprint(),
            IpRanges::new(Family::V6, [(1, 200)]).fingerprint()
        );
    }

    #[test]
    fn from_sorted_rejects_damaged_lists() {
        assert!(IpRanges::from_sorted(Family::V4, vec![(1, 5), (7, 9)]).is_some());
        assert!(IpRanges::from_sorted(Family::V4, vec![(1, 5), (6, 9)]).is_none());
        assert!(IpRanges::from_sorted(Family::V4, vec![(7, 9), (1, 5)]).is_none());
        assert!(IpRanges::from_sorted(Family::V4, vec![(1, 1 << 40)]).is_none());
    }

    /// Small ranges in a small universe, so a `BTreeSet` model can check everything.
    fn small_ranges() -> impl Strategy<Value = Vec<(u128, u128)>> {
        prop::collection::vec((0u128..300, 0u128..40), 0..8)
            .prop_map(|v| v.into_iter().map(|(a, n)| (a, a + n)).collect())
    }

    fn model(ranges: &[(u128, u128)]) -> BTreeSet<u128> {
        ranges.iter().flat_map(|&(a, b)| a..=b).collect()
    }

    proptest! {
        #[test]
        fn index_of_and_ip_at_match_a_model(ranges in small_ranges(), base in any::<u32>()) {
            let family = if base % 2 == 0 { Family::V4 } else { Family::V6 };
            let base = u128::from(base / 2);
            let shifted: Vec<_> = ranges.iter().map(|&(a, b)| (a + base, b + base)).collect();
            let set = IpRanges::new(family, shifted.iter().copied());
            let expected: Vec<u128> = model(&shifted).into_iter().collect();
            prop_assert_eq!(set.len(), expected.len() as u128);
            for (i, &value) in expected.iter().enumerate() {
                let addr = from_u128(family, value);
                prop_assert_eq!(set.ip_at(i as u64), Some(addr));
                prop_assert_eq!(set.index_of(addr), Some(i as u64));
            }
            prop_assert_eq!(set.ip_at(expected.len() as u64), None);
            for value in base..base + 400 {
                let addr = from_u128(family, value);
                prop_assert_eq!(set.contains(addr), expected.binary_search(&value).is_ok());
            }
        }

        #[test]
        fn subtract_matches_a_model(a in small_ranges(), b in small_ranges()) {
            let set = v4(&a).subtract(&v4(&b));
            let expected: Vec<u128> = model(&a).difference(&model(&b)).copied().collect();
            let got: Vec<u128> = set.raw_ranges().iter().flat_map(|&(x, y)| x..=y).collect();
            prop_assert_eq!(got, expected);
            // The result stays normalised: rebuilding it changes nothing.
            prop_assert_eq!(IpRanges::new(Family::V4, set.raw_ranges().iter().copied()), set);
        }
    }
}
