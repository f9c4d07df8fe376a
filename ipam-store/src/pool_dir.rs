//! Reading the pools an ADD needs, and no more, from an `ippool_dir` of many files (a rail
//! plan puts one pool per node per rail on every node: 8,000 files for 1,000 nodes x 8 rails).
//!
//! **The index.** `<ippool_dir>/.index/<node>.json` lists, for this node, which file defines
//! each pool this node may use (`nodeName` empty or naming it), each SpiderReservedIP file, and
//! each file that does not parse. An ADD reads the index and then only the files of the pools
//! its lists can name; those files are parsed as always, so what a pool is, and whether its
//! filters admit the pod, comes from the file, never from the index.
//!
//! **Staleness.** The index records the directory's mtime from before its scan; any file
//! created, renamed or removed in the directory (how `spiderctl apply`, editors and ConfigMap
//! updates change it) changes that mtime, and the index is rebuilt by the next reader. It
//! lives in a subdirectory so that writing it does not change the mtime it records. An mtime
//! within [`RACY_NS`] of the scan may hide a change made in the same clock tick, so such an
//! index is rebuilt too. A file edited in place without a rename does not change the mtime:
//! that edit is seen at the next change of the directory or `spiderctl apply`. Any
//! disagreement between the index and a file read through it, and every failure, falls back
//! to reading the whole directory, which is also how messages that list every pool are made.
//!
//! **Broken files.** A file that does not parse breaks only itself: it is skipped (and
//! reported in [`Loaded::skipped`]) unless its name could be that of a pool the lists ask for
//! (`gpu1-node2.yaml` for `gpu1-*`), which is then an error naming it.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::ManifestError;
use crate::manifest::{self, Manifest};
use crate::pattern;

const INDEX_DIR: &str = ".index";
const INDEX_VERSION: u32 = 1;
/// Timestamps of the directory advance in clock ticks (a few ms); a change within this of
/// the scan may not have moved the mtime.
const RACY_NS: i128 = 100_000_000;

/// What a pool list asks for: names and patterns, or (no list) the pools marked default.
pub enum Wanted<'a> {
    Entries(&'a [&'a str]),
    Defaults,
}

impl Wanted<'_> {
    /// Whether a source (file stem or etcd key) of this name could define a wanted pool.
    pub fn might_be(&self, stem: &str) -> bool {
        match self {
            Wanted::Entries(entries) => entries.iter().any(|e| pattern::matches(e, stem)),
            // Any pool may be marked default.
            Wanted::Defaults => true,
        }
    }

    /// Whether the pool `name` (marked `spec.default` or not) is wanted.
    fn names(&self, name: &str, default: bool) -> bool {
        match self {
            Wanted::Entries(_) => self.might_be(name),
            Wanted::Defaults => default,
        }
    }
}

/// Pools read, and the sources skipped because they do not parse.
#[derive(Debug, Default)]
pub struct Loaded {
    pub manifest: Manifest,
    pub skipped: Vec<Skipped>,
    /// False when only the files the index points at were read.
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub source: String,
    pub error: String,
}

/// Parses `sources` (`(name, text)`), skipping those that fail unless `wanted` might be
/// defined there. `stem` gives the name a source would have for the pool it defines.
pub fn parse_tolerant(
    sources: Vec<(String, String)>,
    wanted: &Wanted,
    stem: impl Fn(&str) -> String,
) -> Result<Loaded, ManifestError> {
    tolerate(parse_each(sources), wanted, stem)
}

/// Each source parsed on its own.
fn parse_each(sources: Vec<(String, String)>) -> Vec<(String, Result<Manifest, ManifestError>)> {
    sources
        .into_iter()
        .map(|(source, text)| {
            let parsed = manifest::parse(&text, &source);
            (source, parsed)
        })
        .collect()
}

fn tolerate(
    parsed: Vec<(String, Result<Manifest, ManifestError>)>,
    wanted: &Wanted,
    stem: impl Fn(&str) -> String,
) -> Result<Loaded, ManifestError> {
    let mut good = Vec::new();
    let mut skipped = Vec::new();
    for (source, result) in parsed {
        match result {
            Ok(part) => good.push((source, part)),
            Err(e) if !wanted.might_be(&stem(&source)) => skipped.push(Skipped {
                source,
                error: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(Loaded {
        manifest: manifest::combine(good)?,
        skipped,
        complete: true,
    })
}

/// The pools of `dir` that `wanted` can name, for `node`: through the index when it is
/// current, else from every file (and the index is rebuilt, if the directory is writable).
pub fn load(dir: &Path, node: &str, wanted: &Wanted) -> Result<Loaded, ManifestError> {
    if let Some(index) = Index::read_current(dir, node) {
        if let Some(loaded) = index.load(dir, wanted) {
            return Ok(loaded);
        }
    }
    load_all(dir, node, wanted)
}

/// Every file of `dir`; rebuilds the index for `node` on the way.
pub fn load_all(dir: &Path, node: &str, wanted: &Wanted) -> Result<Loaded, ManifestError> {
    let (mtime, files) = scan(dir)?;
    let parsed = parse_each(files);
    // Best effort: a read-only directory (a ConfigMap volume) is read whole each time.
    if dir.join(INDEX_DIR).is_dir() {
        let _ = Index::build(node, mtime, &parsed).write(dir);
    }
    tolerate(parsed, wanted, file_stem)
}

/// Rebuilds the index of `dir` for `node` now (what `spiderctl apply` does after writing),
/// so that the next ADD does not pay for the scan.
pub fn refresh_index(dir: &Path, node: &str) -> Result<(), String> {
    let (mtime, files) = scan(dir).map_err(|e| e.to_string())?;
    Index::build(node, mtime, &parse_each(files)).write(dir)
}

/// The file stem of a source named by its path: the name `spiderctl apply` gives a pool's file.
fn file_stem(source: &str) -> String {
    let name = Path::new(source)
        .file_name()
        .map_or(source.into(), |n| n.to_string_lossy().into_owned());
    [".yaml", ".yml", ".json"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(&name)
        .to_owned()
}

/// The directory's mtime (read first, so a change during the scan makes the index stale)
/// and the text of each of its manifest files.
fn scan(dir: &Path) -> Result<(i128, Vec<(String, String)>), ManifestError> {
    // Created before the mtime is read: creating it changes the mtime.
    let _ = fs::create_dir(dir.join(INDEX_DIR));
    let mtime = dir_mtime(dir).map_err(|source| ManifestError::Read {
        path: dir.into(),
        source,
    })?;
    let files = manifest::list_dir(dir)?
        .into_iter()
        .map(|path| Ok((path.display().to_string(), manifest::read_text(&path)?)))
        .collect::<Result<Vec<_>, ManifestError>>()?;
    Ok((mtime, files))
}

fn dir_mtime(dir: &Path) -> std::io::Result<i128> {
    let meta = fs::metadata(dir)?;
    Ok(i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()))
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

#[derive(Debug, Serialize, Deserialize)]
struct Index {
    version: u32,
    node: String,
    /// The directory's mtime before the scan, in ns.
    dir_mtime_ns: i128,
    /// Written with a mtime too close to its scan: to be rebuilt by its next reader.
    racy: bool,
    /// Pools this node may use (`nodeName` empty or naming it), with their files.
    pools: Vec<IndexedPool>,
    /// Files holding SpiderReservedIPs: every ADD reads them.
    reserved: Vec<String>,
    /// Files that do not parse, with the reason.
    broken: Vec<Skipped>,
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexedPool {
    name: String,
    file: String,
    default: bool,
}

impl Index {
    fn path(dir: &Path, node: &str) -> PathBuf {
        dir.join(INDEX_DIR).join(format!("{node}.json"))
    }

    fn build(
        node: &str,
        dir_mtime_ns: i128,
        files: &[(String, Result<Manifest, ManifestError>)],
    ) -> Index {
        let mut index = Index {
            version: INDEX_VERSION,
            node: node.into(),
            dir_mtime_ns,
            racy: now_ns() - dir_mtime_ns < RACY_NS,
            pools: Vec::new(),
            reserved: Vec::new(),
            broken: Vec::new(),
        };
        for (source, parsed) in files {
            let file = Path::new(source)
                .file_name()
                .map_or(source.clone(), |n| n.to_string_lossy().into_owned());
            match parsed {
                Ok(parsed) => {
                    if !parsed.reserved.is_empty() {
                        index.reserved.push(file.clone());
                    }
                    for pool in &parsed.pools {
                        let names = &pool.filters().node_name;
                        if names.is_empty() || names.iter().any(|n| n == node) {
                            index.pools.push(IndexedPool {
                                name: pool.name().into(),
                                file: file.clone(),
                                default: pool.is_default(),
                            });
                        }
                    }
                }
                Err(e) => index.broken.push(Skipped {
                    source: source.clone(),
                    error: e.to_string(),
                }),
            }
        }
        index
    }

    fn write(&self, dir: &Path) -> Result<(), String> {
        let path = Index::path(dir, &self.node);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let text = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                format!("cannot write the pool index {}: {e}", path.display())
            })
    }

    /// The index of `dir` for `node`, if there is one and the directory has not changed since.
    fn read_current(dir: &Path, node: &str) -> Option<Index> {
        let text = fs::read(Index::path(dir, node)).ok()?;
        let index: Index = serde_json::from_slice(&text).ok()?;
        let current = index.version == INDEX_VERSION
            && index.node == node
            && !index.racy
            && dir_mtime(dir).ok()? == index.dir_mtime_ns;
        current.then_some(index)
    }

    /// The wanted pools through the index, or `None` when the whole directory must be read:
    /// nothing in the index is wanted (the messages then list every pool), or a file does not
    /// say what the index says.
    fn load(&self, dir: &Path, wanted: &Wanted) -> Option<Loaded> {
        let mut files: Vec<&str> = self.reserved.iter().map(String::as_str).collect();
        let mut expected: HashSet<&str> = HashSet::new();
        for pool in &self.pools {
            if wanted.names(&pool.name, pool.default) {
                expected.insert(&pool.name);
                if !files.contains(&pool.file.as_str()) {
                    files.push(&pool.file);
                }
            }
        }
        if expected.is_empty() {
            return None;
        }
        let mut sources = Vec::with_capacity(files.len());
        for file in files {
            let path = dir.join(file);
            sources.push((path.display().to_string(), manifest::read_text(&path).ok()?));
        }
        // A broken file that might define a wanted pool is the full read's error to report.
        if self
            .broken
            .iter()
            .any(|b| wanted.might_be(&file_stem(&b.source)))
        {
            return None;
        }
        let manifest = manifest::parse_all(sources).ok()?;
        let agrees = expected.iter().all(|name| manifest.get(name).is_some());
        agrees.then(|| Loaded {
            manifest,
            skipped: self.broken.clone(),
            complete: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn pool(name: &str, node: Option<&str>, subnet: &str) -> String {
        let node = node.map_or(String::new(), |n| format!("  nodeName: [{n}]\n"));
        format!(
            "apiVersion: spiderpool.spidernet.io/v2beta1\nkind: SpiderIPPool\nmetadata:\n  \
             name: {name}\nspec:\n  subnet: {subnet}\n{node}"
        )
    }

    fn names(loaded: &Loaded) -> Vec<&str> {
        let mut names: Vec<&str> = loaded.manifest.pools.iter().map(|p| p.name()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_index_reads_only_this_nodes_wanted_pools_and_follows_changes() {
        let dir = TempDir::new("index");
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        for node in 1..=3 {
            for rail in 1..=2 {
                let name = format!("gpu{rail}-node{node}");
                let subnet = format!("10.{rail}.{node}.0/27");
                write(
                    &format!("{name}.yaml"),
                    &pool(&name, Some(&format!("node{node}")), &subnet),
                );
            }
        }
        write("shared.yaml", &pool("shared", None, "10.9.0.0/24"));
        let entries = ["gpu1-*"];
        let wanted = Wanted::Entries(&entries);
        let full = load(dir.path(), "node2", &wanted).unwrap();
        assert!(full.complete);
        assert_eq!(
            names(&full)[..3],
            ["gpu1-node1", "gpu1-node2", "gpu1-node3"]
        );
        // The scan just happened: the index is racy and read whole again until it settles.
        let mut index = Index::read_current(dir.path(), "node2");
        assert!(index.is_none());
        let mut path = Index::path(dir.path(), "node2");
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"racy\":true"), "{text}");
        fs::write(&path, text.replace("\"racy\":true", "\"racy\":false")).unwrap();
        index = Index::read_current(dir.path(), "node2");
        assert!(index.is_some());
        let through = load(dir.path(), "node2", &wanted).unwrap();
        assert!(!through.complete);
        assert_eq!(names(&through), ["gpu1-node2"]);
        // A new file changes the directory's mtime: the next load reads every file.
        write(
            "gpu1-node2b.yaml",
            &pool("gpu1-node2b", Some("node2"), "10.1.20.0/27"),
        );
        let again = load(dir.path(), "node2", &wanted).unwrap();
        assert!(again.complete && names(&again).contains(&"gpu1-node2b"));
        path = Index::path(dir.path(), "node9");
        assert!(!path.exists());
    }

    #[test]
    fn a_broken_file_breaks_only_itself_unless_it_might_be_wanted() {
        let dir = TempDir::new("broken");
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        write(
            "gpu1-node1.yaml",
            &pool("gpu1-node1", Some("node1"), "10.1.1.0/27"),
        );
        write("notes.yaml", "kind: [");
        let entries = ["gpu1-*"];
        let loaded = load(dir.path(), "node1", &Wanted::Entries(&entries)).unwrap();
        assert_eq!(names(&loaded), ["gpu1-node1"]);
        assert_eq!(loaded.skipped.len(), 1);
        assert!(loaded.skipped[0].source.ends_with("notes.yaml"));
        write("gpu1-node2.yaml", "kind: [");
        let err = load(dir.path(), "node1", &Wanted::Entries(&entries))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gpu1-node2.yaml: cannot parse as YAML"),
            "{err}"
        );
        let other = ["gpu2-*"];
        assert!(load(dir.path(), "node1", &Wanted::Entries(&other)).is_ok());
    }
}
