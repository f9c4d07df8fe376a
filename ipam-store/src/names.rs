//! The rules for names that become file names in the store: every name is one path component
//! that cannot be `.`, `..` or contain `/`, so no name can reach outside the data dir.

use std::fmt;

/// What a name names; each kind has its own rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// A SpiderIPPool's `metadata.name`: a Kubernetes object name (DNS-1123 subdomain).
    Pool,
    /// A CNI network name (the conflist's `name`).
    Network,
    /// `CNI_CONTAINERID`.
    ContainerId,
    /// `CNI_IFNAME`: the kernel's rule for interface names.
    Ifname,
    /// A Kubernetes node name (`SPIDERPOOL_NODE_NAME`), a key component in block mode.
    Node,
}

/// Attachment files are named `<container id>:<ifname>`: 239 + 1 + 15 = NAME_MAX (255).
const MAX_ID_LEN: usize = 239;

impl NameKind {
    pub fn is_valid(self, value: &str) -> bool {
        match self {
            NameKind::Pool | NameKind::Node => is_dns_subdomain(value),
            NameKind::Network | NameKind::ContainerId => is_cni_id(value),
            NameKind::Ifname => is_ifname(value),
        }
    }

    /// The rule in words, for error messages.
    pub fn rule(self) -> &'static str {
        match self {
            NameKind::Pool | NameKind::Node => {
                "use lowercase letters, digits, '-' and '.', starting and ending with a letter \
                 or digit, at most 253 characters (a Kubernetes object name)"
            }
            NameKind::Network | NameKind::ContainerId => {
                "start with a letter or digit, then only letters, digits, '_', '.' and '-', \
                 at most 239 characters"
            }
            NameKind::Ifname => "use 1 to 15 bytes without '/', ':' or whitespace, not '.' or '..'",
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Pool => "pool name",
            NameKind::Network => "network name",
            NameKind::ContainerId => "container id",
            NameKind::Ifname => "interface name",
            NameKind::Node => "node name",
        })
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    matches!((b.first(), b.last()), (Some(&f), Some(&l)) if alnum(f) && alnum(l))
        && b.len() <= 253
        && b.iter().all(|&c| alnum(c) || c == b'-' || c == b'.')
}

fn is_cni_id(s: &str) -> bool {
    let b = s.as_bytes();
    matches!(b.first(), Some(c) if c.is_ascii_alphanumeric())
        && b.len() <= MAX_ID_LEN
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn is_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::NameKind::*;

    #[test]
    fn pool_names_are_kubernetes_names() {
        for ok in ["gpu1-net11", "a", "pool.v4", "0x"] {
            assert!(Pool.is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "Gpu1",
            "-a",
            "a-",
            ".",
            "..",
            "a/b",
            "a_b",
            &"a".repeat(254),
        ] {
            assert!(!Pool.is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn container_ids_follow_the_cni_rule() {
        for ok in ["abc123", "a_b.c-d", "0", &"f".repeat(239)] {
            assert!(ContainerId.is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "-a",
            "_a",
            "a/b",
            "a:b",
            "a b",
            &"f".repeat(240),
        ] {
            assert!(!ContainerId.is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn ifnames_follow_the_kernel_rule() {
        for ok in ["net1", "eth0", "a-very-long-nm1", "weird.name@x"] {
            assert!(Ifname.is_valid(ok), "{ok}");
        }
        for bad in ["", ".", "..", "net/1", "net:1", "net 1", "a-very-long-name"] {
            assert!(!Ifname.is_valid(bad), "{bad}");
        }
    }
}
