//! A pool's allocation hint: one bit per allocatable index (set = believed held) and a
//! round-robin cursor, so that finding a free address costs the same however full the pool is.
//!
//! Only a hint: `ips/` is the truth and every claim is checked against it, so a wrong bit costs
//! at most a wasted probe (clear but held) or a rebuild (set but free, found when the bitmap
//! says full). That is why it is updated in place, a few bytes at a time, without fsync.
//!
//! Layout, little-endian:
//! `magic[8] | fingerprint u64 | cursor u64 | family u8 | pad[3] | range count u32 |
//!  ranges (start u128, end u128)... | bits (u64 words)`.
//! The ranges make the file self-describing, so a release can find an address's bit without
//! the pool definition; the fingerprint over them doubles as their checksum.

use std::fs::{File, OpenOptions};
use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::fsutil;
use crate::pool::MAX_POOL_SIZE;
use crate::range::{Family, IpRanges};

const MAGIC: &[u8; 8] = b"IPBMAP01";
const HEADER_BYTES: u64 = 32;
const CURSOR_AT: u64 = 16;
const RANGE_BYTES: u64 = 32;
/// Words read per `pread` while scanning: 4 KiB, 32768 addresses.
const SCAN_WORDS: u64 = 512;

struct Header {
    fingerprint: u64,
    cursor: u64,
    family: Family,
    ranges: u32,
}

impl Header {
    fn decode(bytes: &[u8; HEADER_BYTES as usize]) -> Option<Header> {
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let family = match bytes[24] {
            4 => Family::V4,
            6 => Family::V6,
            _ => return None,
        };
        (&bytes[..8] == MAGIC).then(|| Header {
            fingerprint: u64_at(8),
            cursor: u64_at(16),
            family,
            ranges: u32::from_le_bytes(bytes[28..32].try_into().expect("4 bytes")),
        })
    }

    fn encode(&self) -> [u8; HEADER_BYTES as usize] {
        let mut out = [0u8; HEADER_BYTES as usize];
        out[..8].copy_from_slice(MAGIC);
        out[8..16].copy_from_slice(&self.fingerprint.to_le_bytes());
        out[16..24].copy_from_slice(&self.cursor.to_le_bytes());
        out[24] = self.family.version();
        out[28..32].copy_from_slice(&self.ranges.to_le_bytes());
        out
    }
}

pub(crate) struct Bitmap {
    file: File,
    path: PathBuf,
    ranges: IpRanges,
    /// Number of bits (allocatable addresses).
    len: u64,
    bits_at: u64,
    /// The next index to try.
    cursor: u64,
}

impl Bitmap {
    /// Opens the bitmap of a pool with these allocatable `ranges`, rebuilding it from `held`
    /// when it is missing, damaged, or was built for other ranges (the pool was edited).
    pub fn open(
        path: &Path,
        ranges: &IpRanges,
        held: impl FnOnce() -> Result<Vec<IpAddr>, StoreError>,
    ) -> Result<Bitmap, StoreError> {
        let file = fsutil::open(path, OpenOptions::new().read(true).write(true).create(true))?;
        let mut bitmap = Bitmap::new(file, path, ranges.clone());
        match bitmap.read_header()? {
            Some(h) if h.fingerprint == ranges.fingerprint() && bitmap.has_expected_size()? => {
                bitmap.cursor = h.cursor.checked_rem(bitmap.len).unwrap_or(0);
            }
            _ => bitmap.rebuild(&held()?)?,
        }
        Ok(bitmap)
    }

    /// Opens whatever bitmap is there, to clear bits on release; `None` when it is missing or
    /// damaged, since the next allocation rebuilds it anyway.
    pub fn open_existing(path: &Path) -> Result<Option<Bitmap>, StoreError> {
        if !fsutil::exists(path)? {
            return Ok(None);
        }
        let file = fsutil::open(path, OpenOptions::new().read(true).write(true))?;
        let probe = Bitmap::new(file, path, IpRanges::new(Family::V4, []));
        let Some(header) = probe.read_header()? else {
            return Ok(None);
        };
        let size = probe.file_len()?;
        let ranges_end = HEADER_BYTES + u64::from(header.ranges) * RANGE_BYTES;
        if ranges_end > size {
            return Ok(None);
        }
        let mut raw = vec![0u8; (ranges_end - HEADER_BYTES) as usize];
        probe.read_at(&mut raw, HEADER_BYTES)?;
        let pairs = raw
            .chunks_exact(RANGE_BYTES as usize)
            .map(|c| {
                let half = |at: usize| u128::from_le_bytes(c[at..at + 16].try_into().expect("16"));
                (half(0), half(16))
            })
            .collect();
        let ranges = IpRanges::from_sorted(header.family, pairs)
            .filter(|r| r.fingerprint() == header.fingerprint && r.len() <= MAX_POOL_SIZE);
        let Some(ranges) = ranges else {
            return Ok(None);
        };
        let bitmap = Bitmap::new(probe.file, path, ranges);
        Ok(bitmap.has_expected_size()?.then_some(bitmap))
    }

    fn new(file: File, path: &Path, ranges: IpRanges) -> Bitmap {
        let len = u64::try_from(ranges.len()).expect("pool size is bounded");
        let bits_at = HEADER_BYTES + ranges.raw_ranges().len() as u64 * RANGE_BYTES;
        Bitmap {
            file,
            path: path.into(),
            ranges,
            len,
            bits_at,
            cursor: 0,
        }
    }

    pub fn ranges(&self) -> &IpRanges {
        &self.ranges
    }

    fn words(&self) -> u64 {
        self.len.div_ceil(64)
    }

    fn read_header(&self) -> Result<Option<Header>, StoreError> {
        let mut bytes = [0u8; HEADER_BYTES as usize];
        if self.file_len()? < HEADER_BYTES {
            return Ok(None);
        }
        self.read_at(&mut bytes, 0)?;
        Ok(Header::decode(&bytes))
    }

    fn has_expected_size(&self) -> Result<bool, StoreError> {
        Ok(self.file_len()? == self.bits_at + self.words() * 8)
    }

    fn file_len(&self) -> Result<u64, StoreError> {
        let meta = self.file.metadata();
        Ok(meta.map_err(StoreError::io("inspect", &self.path))?.len())
    }

    fn read_at(&self, buf: &mut [u8], at: u64) -> Result<(), StoreError> {
        self.file
            .read_exact_at(buf, at)
            .map_err(StoreError::io("read", &self.path))
    }

    fn write_at(&self, buf: &[u8], at: u64) -> Result<(), StoreError> {
        self.file
            .write_all_at(buf, at)
            .map_err(StoreError::io("write", &self.path))
    }

    /// Rewrites the whole file with exactly the bits of `held` that are in the ranges, keeping
    /// the cursor. Truncating first means a crash part-way leaves a file of the wrong size,
    /// which the next open rebuilds.
    pub fn rebuild(&mut self, held: &[IpAddr]) -> Result<(), StoreError> {
        let mut words = vec![0u64; self.words() as usize];
        for index in held.iter().filter_map(|&ip| self.ranges.index_of(ip)) {
            words[(index / 64) as usize] |= 1 << (index % 64);
        }
        let header = Header {
            fingerprint: self.ranges.fingerprint(),
            cursor: self.cursor,
            family: self.ranges.family(),
            ranges: u32::try_from(self.ranges.raw_ranges().len()).expect("at most 2^24 ranges"),
        };
        let mut bytes = Vec::with_capacity((self.bits_at + self.words() * 8) as usize);
        bytes.extend_from_slice(&header.encode());
        for &(start, end) in self.ranges.raw_ranges() {
            bytes.extend_from_slice(&start.to_le_bytes());
            bytes.extend_from_slice(&end.to_le_bytes());
        }
        words
            .iter()
            .for_each(|w| bytes.extend_from_slice(&w.to_le_bytes()));
        self.file
            .set_len(0)
            .map_err(StoreError::io("truncate", &self.path))?;
        self.write_at(&bytes, 0)
    }

    /// The first clear bit at or after the cursor, wrapping around once.
    pub fn next_clear(&self) -> Result<Option<u64>, StoreError> {
        match self.find_clear(self.cursor, self.len)? {
            Some(index) => Ok(Some(index)),
            None => self.find_clear(0, self.cursor),
        }
    }

    /// The first clear bit in `from..to`, reading a chunk of words at a time.
    fn find_clear(&self, from: u64, to: u64) -> Result<Option<u64>, StoreError> {
        let mut buf = vec![0u8; (SCAN_WORDS * 8) as usize];
        let end_word = to.div_ceil(64);
        let mut word = from / 64;
        while word < end_word {
            let count = SCAN_WORDS.min(end_word - word);
            let chunk = &mut buf[..(count * 8) as usize];
            self.read_at(chunk, self.bits_at + word * 8)?;
            for (k, bytes) in chunk.chunks_exact(8).enumerate() {
                let base = (word + k as u64) * 64;
                let mut free = !u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
                if base < from {
                    free &= u64::MAX << (from - base);
                }
                if free != 0 {
                    let index = base + u64::from(free.trailing_zeros());
                    return Ok((index < to).then_some(index));
                }
            }
            word += count;
        }
        Ok(None)
    }

    /// Marks `index` held or free: a read-modify-write of its byte (the caller holds the
    /// pool lock).
    pub fn set(&self, index: u64, held: bool) -> Result<(), StoreError> {
        if index >= self.len {
            return Ok(());
        }
        let at = self.bits_at + index / 8;
        let mask = 1u8 << (index % 8);
        let mut byte = [0u8];
        self.read_at(&mut byte, at)?;
        let new = if held {
            byte[0] | mask
        } else {
            byte[0] & !mask
        };
        if new != byte[0] {
            self.write_at(&[new], at)?;
        }
        Ok(())
    }

    /// Moves the cursor past `index`, so a just-released address is not handed out again
    /// until the scan comes round (like host-local).
    pub fn advance_past(&mut self, index: u64) -> Result<(), StoreError> {
        self.cursor = (index + 1) % self.len.max(1);
        self.write_at(&self.cursor.to_le_bytes(), CURSOR_AT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::to_u128;
    use crate::testutil::TempDir;

    fn v4_range(a: &str, b: &str) -> IpRanges {
        let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
        IpRanges::new(Family::V4, [(to_u128(a), to_u128(b))])
    }

    fn temp_path(name: &str) -> (TempDir, PathBuf) {
        let dir = TempDir::new(name);
        let path = dir.path().join("bitmap");
        (dir, path)
    }

    #[test]
    fn scans_from_cursor_and_wraps() {
        let (_dir, path) = temp_path("wrap");
        let ranges = v4_range("10.0.0.0", "10.0.0.199");
        let mut bitmap = Bitmap::open(&path, &ranges, || Ok(vec![])).unwrap();
        assert_eq!(bitmap.next_clear().unwrap(), Some(0));
        for i in 0..130 {
            bitmap.set(i, true).unwrap();
        }
        bitmap.advance_past(129).unwrap();
        assert_eq!(bitmap.next_clear().unwrap(), Some(130));
        bitmap.set(5, false).unwrap();
        // Round-robin: 130.. first, 5 only after wrapping.
        for i in 130..200 {
            bitmap.set(i, true).unwrap();
        }
        assert_eq!(bitmap.next_clear().unwrap(), Some(5));
        bitmap.set(5, true).unwrap();
        assert_eq!(bitmap.next_clear().unwrap(), None);
    }

    #[test]
    fn scans_across_chunks() {
        let (_dir, path) = temp_path("chunks");
        let ranges = v4_range("10.0.0.0", "10.1.255.255");
        let held: Vec<IpAddr> = (0..100_000u32)
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        let bitmap = Bitmap::open(&path, &ranges, || Ok(held)).unwrap();
        assert_eq!(bitmap.next_clear().unwrap(), Some(100_000));
    }

    #[test]
    fn reopens_with_state_and_detects_other_ranges() {
        let (_dir, path) = temp_path("reopen");
        let ranges = v4_range("10.0.0.0", "10.0.0.99");
        let mut bitmap = Bitmap::open(&path, &ranges, || Ok(vec![])).unwrap();
        bitmap.set(0, true).unwrap();
        bitmap.advance_past(0).unwrap();
        drop(bitmap);
        let bitmap = Bitmap::open(&path, &ranges, || panic!("must not rebuild")).unwrap();
        assert_eq!(bitmap.next_clear().unwrap(), Some(1));
        let existing = Bitmap::open_existing(&path).unwrap().expect("valid");
        assert_eq!(existing.ranges(), &ranges);

        let edited = v4_range("10.0.0.0", "10.0.0.49");
        let mut rebuilt = false;
        Bitmap::open(&path, &edited, || {
            rebuilt = true;
            Ok(vec![])
        })
        .unwrap();
        assert!(rebuilt);
    }

    #[test]
    fn damaged_files_are_not_trusted() {
        let (_dir, path) = temp_path("damaged");
        let ranges = v4_range("10.0.0.0", "10.0.0.99");
        Bitmap::open(&path, &ranges, || Ok(vec![])).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1; // a range bound: the fingerprint no longer matches
        std::fs::write(&path, &bytes).unwrap();
        assert!(Bitmap::open_existing(&path).unwrap().is_none());
        std::fs::write(&path, &bytes[..20]).unwrap();
        assert!(Bitmap::open_existing(&path).unwrap().is_none());
        let mut rebuilt = false;
        Bitmap::open(&path, &ranges, || {
            rebuilt = true;
            Ok(vec![])
        })
        .unwrap();
        assert!(rebuilt);
    }
}
