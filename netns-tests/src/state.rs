//! Snapshots for asserting that a refused call left no trace: of a directory tree (every
//! entry's type, mode and content) and of a namespace's network state (links, addresses,
//! rules, routes). Take one before, one after, and compare with `diff`.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::hash::Hasher;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::netns::Netns;

/// One entry of a [`DirState`], compared whole.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir {
        mode: u32,
    },
    /// Content is hashed (not kept): a data dir may hold a multi-megabyte bitmap.
    File {
        mode: u32,
        len: u64,
        hash: u64,
    },
    Symlink {
        target: PathBuf,
    },
    Other {
        mode: u32,
    },
}

/// Every entry under a directory, by path relative to it. A missing directory is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirState {
    entries: BTreeMap<PathBuf, Entry>,
}

impl DirState {
    /// Walks `root` without following symlinks. Panics on an unreadable entry: a snapshot
    /// that silently skipped something could hide exactly the change a test looks for.
    pub fn of(root: &Path) -> DirState {
        let mut entries = BTreeMap::new();
        walk(root, Path::new(""), &mut entries);
        DirState { entries }
    }

    /// The differences from `earlier` to `self`, one line each (empty: identical).
    pub fn diff(&self, earlier: &DirState) -> Vec<String> {
        let paths: BTreeSet<&PathBuf> = self.entries.keys().chain(earlier.entries.keys()).collect();
        paths
            .into_iter()
            .filter_map(|path| {
                let (was, is) = (earlier.entries.get(path), self.entries.get(path));
                (was != is).then(|| format!("{}: {was:?} -> {is:?}", path.display()))
            })
            .collect()
    }

    /// `(path, kind, mode)` of every entry, kind being `dir`, `file`, `symlink` or `other`
    /// (a symlink's mode is reported as 0: it has none that matters).
    pub fn modes(&self) -> impl Iterator<Item = (&Path, &'static str, u32)> {
        self.entries.iter().map(|(path, entry)| {
            let (kind, mode) = match entry {
                Entry::Dir { mode } => ("dir", *mode),
                Entry::File { mode, .. } => ("file", *mode),
                Entry::Symlink { .. } => ("symlink", 0),
                Entry::Other { mode } => ("other", *mode),
            };
            (path.as_path(), kind, mode)
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let dir = root.join(rel);
    let listing = match fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == ErrorKind::NotFound && rel.as_os_str().is_empty() => return,
        Err(e) => panic!("snapshot: cannot list {}: {e}", dir.display()),
    };
    for item in listing {
        let item = item.unwrap_or_else(|e| panic!("snapshot: listing {}: {e}", dir.display()));
        let rel = rel.join(item.file_name());
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("snapshot: cannot inspect {}: {e}", path.display()));
        let mode = meta.permissions().mode() & 0o7777;
        let kind = meta.file_type();
        let entry = if kind.is_symlink() {
            Entry::Symlink {
                target: fs::read_link(&path).expect("a symlink has a target"),
            }
        } else if kind.is_dir() {
            walk(root, &rel, out);
            Entry::Dir { mode }
        } else if kind.is_file() {
            let bytes = fs::read(&path)
                .unwrap_or_else(|e| panic!("snapshot: cannot read {}: {e}", path.display()));
            let mut hasher = DefaultHasher::new();
            hasher.write(&bytes);
            Entry::File {
                mode,
                len: meta.len(),
                hash: hasher.finish(),
            }
        } else {
            Entry::Other { mode }
        };
        out.insert(rel, entry);
    }
}

/// What a plugin could leave in a namespace: links (name and type), addresses, IPv4 and IPv6
/// rules, and routes of every table, each rendered as one comparable line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetState {
    items: BTreeSet<String>,
}

impl NetState {
    /// Waits (bounded) for every IPv6 address of `ns` to finish duplicate address detection
    /// first: a link that came up shortly before gets its link-local route only then, and
    /// that must not read as a change made by whatever runs between two snapshots.
    pub fn of(ns: &Netns) -> NetState {
        let mut links = ip_json(ns, &["addr", "show"]);
        for _ in 0..DAD_POLLS {
            if !links.iter().any(has_tentative_address) {
                break;
            }
            thread::sleep(DAD_POLL_INTERVAL);
            links = ip_json(ns, &["addr", "show"]);
        }
        let mut items = BTreeSet::new();
        for link in links {
            let name = link["ifname"].as_str().unwrap_or("?");
            items.insert(format!("link {name} {}", link["link_type"]));
            for addr in link["addr_info"].as_array().into_iter().flatten() {
                items.insert(format!(
                    "addr {name} {}/{}",
                    addr["local"].as_str().unwrap_or("?"),
                    addr["prefixlen"]
                ));
            }
        }
        // Rules and routes have no volatile fields in `ip -j` output (no counters), and
        // serde_json's maps are sorted, so the JSON text of each is a stable key.
        for family in ["-4", "-6"] {
            for rule in ip_json(ns, &[family, "rule", "show"]) {
                items.insert(format!("rule {rule}"));
            }
            for route in ip_json(ns, &[family, "route", "show", "table", "all"]) {
                items.insert(format!("route {route}"));
            }
        }
        NetState { items }
    }

    /// What appeared (`+`) and disappeared (`-`) from `earlier` to `self`.
    pub fn diff(&self, earlier: &NetState) -> Vec<String> {
        let added = self
            .items
            .difference(&earlier.items)
            .map(|i| format!("+ {i}"));
        let removed = earlier
            .items
            .difference(&self.items)
            .map(|i| format!("- {i}"));
        added.chain(removed).collect()
    }
}

/// DAD takes about a second (one probe, `retrans_time` 1 s); this bounds the wait at 5 s.
const DAD_POLLS: u32 = 250;
const DAD_POLL_INTERVAL: Duration = Duration::from_millis(20);

fn has_tentative_address(link: &Value) -> bool {
    let addrs = link["addr_info"].as_array().into_iter().flatten();
    addrs.into_iter().any(|a| a["tentative"] == true)
}

fn ip_json(ns: &Netns, args: &[&str]) -> Vec<Value> {
    let args: Vec<&str> = std::iter::once("-j").chain(args.iter().copied()).collect();
    let out = ns.ip(&args).unwrap_or_else(|e| panic!("snapshot: {e}"));
    // `ip -j` prints nothing at all for an empty list of rules or routes.
    if out.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str(&out) {
        Ok(Value::Array(items)) => items,
        _ => panic!("snapshot: ip {}: unexpected output {out:?}", args.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::temp_dir;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_dir_snapshot_sees_content_mode_and_new_entries() {
        let dir = temp_dir("state");
        let root = dir.path();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/a"), "one").unwrap();
        symlink("/nowhere", root.join("link")).unwrap();
        let before = DirState::of(root);
        assert_eq!(before.len(), 3);
        assert!(DirState::of(root).diff(&before).is_empty());

        fs::write(root.join("sub/a"), "two").unwrap();
        assert_eq!(DirState::of(root).diff(&before).len(), 1);
        fs::write(root.join("sub/a"), "one").unwrap();
        fs::set_permissions(root.join("sub"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(root.join("b"), "").unwrap();
        let diff = DirState::of(root).diff(&before);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert!(DirState::of(&root.join("absent")).is_empty());
    }
}
