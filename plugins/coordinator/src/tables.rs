//! Which routing table and rule priority a NIC gets: a function of its name alone, so they are
//! the same whatever order the chains run in, and never one of the kernel's own tables.
//!
//! `netN` (Multus's names) with N from 0 to 149 gets table 100 + N (100-249); any other name a
//! table hashed into 2000-11999. Table 0 (unspecified) and 253-255 (`default`, `main`,
//! `local`) are never handed out. The rules pointing at a table have priority 20000 + table
//! (20100-31999): below `from all lookup main` (32766), above what `ip rule add` picks by
//! default.

const NET_TABLE_BASE: u32 = 100;
/// `net0`..`net149`: tables 100-249, short of the kernel's 253.
const NET_TABLES: u32 = 150;
pub const HASHED_TABLE_BASE: u32 = 2000;
pub const HASHED_TABLES: u32 = 10_000;
const PRIORITY_BASE: u32 = 20_000;

/// The table of NIC `ifname`.
pub fn table_for(ifname: &str) -> u32 {
    let number = ifname
        .strip_prefix("net")
        .filter(|digits| is_canonical_number(digits))
        .and_then(|digits| digits.parse::<u32>().ok());
    match number {
        Some(n) if n < NET_TABLES => NET_TABLE_BASE + n,
        _ => HASHED_TABLE_BASE + fnv1a(ifname.as_bytes()) % HASHED_TABLES,
    }
}

/// The priority of the rules pointing at `table`: one per table, so their order never depends
/// on which chain ran first.
pub fn priority_for(table: u32) -> u32 {
    PRIORITY_BASE + table
}

/// Digits only, no leading zero: `net01` must not take `net1`'s table.
fn is_canonical_number(digits: &str) -> bool {
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's own tables: unspecified, `default`, `main`, `local`.
    const RESERVED: [u32; 4] = [0, 253, 254, 255];

    fn documented(table: u32) -> bool {
        (NET_TABLE_BASE..NET_TABLE_BASE + NET_TABLES).contains(&table)
            || (HASHED_TABLE_BASE..HASHED_TABLE_BASE + HASHED_TABLES).contains(&table)
    }

    #[test]
    fn multus_names_get_100_plus_n_and_others_a_hashed_table() {
        assert_eq!(table_for("net1"), 101);
        assert_eq!(table_for("net8"), 108);
        assert_eq!(table_for("net0"), 100);
        assert_eq!(table_for("net149"), 249);
        // "net01" is not "net1": it must not share its table.
        assert_ne!(table_for("net01"), table_for("net1"));
        for name in [
            "eth1", "rdma0", "net01", "netx", "net150", "net153", "net154",
        ] {
            let t = table_for(name);
            assert!(
                (HASHED_TABLE_BASE..HASHED_TABLE_BASE + HASHED_TABLES).contains(&t),
                "{name}: {t}"
            );
        }
        assert_eq!(table_for("eth1"), table_for("eth1"));
    }

    /// Every `net<digits>` a Multus annotation can name (an ifname is at most 15 bytes, so up
    /// to 12 digits; all up to 10^6 and the edges beyond), every short name over a small
    /// alphabet, and the names runtimes use: none maps to a reserved table or outside the two
    /// documented ranges, and the rule priority stays below `from all lookup main`.
    #[test]
    fn no_name_a_user_can_give_maps_to_a_reserved_or_undocumented_table() {
        let check = |name: &str| {
            let t = table_for(name);
            assert!(!RESERVED.contains(&t), "{name} -> reserved table {t}");
            assert!(
                documented(t),
                "{name} -> table {t} outside the documented ranges"
            );
            assert!(
                priority_for(t) < 32_766,
                "{name} -> priority {}",
                priority_for(t)
            );
        };
        for n in 0..1_000_000u64 {
            check(&format!("net{n}"));
            check(&format!("net0{n}"));
        }
        for n in [u32::MAX as u64, u64::from(u32::MAX) + 1, 999_999_999_999] {
            check(&format!("net{n}"));
        }
        let alphabet: Vec<char> = "aehnt0123459-_.".chars().collect();
        let mut names = vec![String::new()];
        for _ in 0..4 {
            names = names
                .iter()
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.iter().for_each(|n| check(n));
        }
        for name in ["eth0", "eth1", "eth15", "ens1f0np0", "rdma0", "net", "lo"] {
            check(name);
        }
    }

    #[test]
    fn priorities_stay_below_the_main_rule() {
        assert!(priority_for(HASHED_TABLE_BASE + HASHED_TABLES - 1) < 32_766);
        assert_eq!(priority_for(101), 20_101);
    }
}
