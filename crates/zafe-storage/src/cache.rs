//! A bounded cache of physical entries in front of a backend's `get`.
//!
//! What it holds is exactly what the database holds: the key, the stored
//! bytes (always ciphertext for anything secret) and the generation. So it
//! puts nothing in memory that a read would not have put there anyway, and
//! the barrier still decrypts and checks every read, hit or miss.
//!
//! Bounded by entry count and by bytes (keys plus values), split over
//! shards, each evicting its least recently used entries. It never grows
//! with the number of records stored, only up to its configured size.
//!
//! # Staying exact
//!
//! The owner of the cache (the SQLite backend) keeps it exact:
//!
//! - every local commit updates it *after* the commit is durable and
//!   *before* any caller is answered: a put stores the new value and
//!   generation (write-through), a delete removes the key; the update runs
//!   where it cannot be cancelled (the writer thread, or a spawned task);
//! - a read that missed fills the cache only if nothing in its shard changed
//!   while it was reading ([`Ticket`]): otherwise a read that started before
//!   a commit and finished after it could put the old value back;
//! - a commit that fails its condition on a key drops that key, and the
//!   backend clears everything when another connection (another process)
//!   has committed to the same file.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;

use hashlink::LruCache;

use crate::{Entry, Op};

/// Shards: enough that a commit on one key rarely makes a concurrent miss
/// in the same shard skip its fill, few enough to stay cheap to clear.
const SHARDS: usize = 64;

/// Rough per-entry overhead (node, hash slot, allocations) counted against
/// the byte budget on top of the key and value lengths.
const ENTRY_OVERHEAD: usize = 96;

/// How big the cache may get. Zero entries or zero bytes turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    pub max_entries: usize,
    pub max_bytes: usize,
}

impl CacheConfig {
    pub const DEFAULT_ENTRIES: usize = 10_000;
    pub const DEFAULT_BYTES: usize = 4 * 1024 * 1024;

    pub const OFF: CacheConfig = CacheConfig {
        max_entries: 0,
        max_bytes: 0,
    };

    pub fn is_off(&self) -> bool {
        self.max_entries == 0 || self.max_bytes == 0
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: Self::DEFAULT_ENTRIES,
            max_bytes: Self::DEFAULT_BYTES,
        }
    }
}

struct Shard {
    map: LruCache<String, (Vec<u8>, i64)>,
    bytes: usize,
    /// Bumped by every change to any key of this shard.
    epoch: u64,
}

/// What a miss hands back, to be presented with the value read.
pub(crate) struct Ticket {
    shard: usize,
    epoch: u64,
}

pub(crate) enum Lookup {
    Hit(Entry),
    Miss(Ticket),
}

pub(crate) struct EntryCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    shard_entries: usize,
    shard_bytes: usize,
    /// Larger values are never cached (they would evict many small ones).
    max_value: usize,
}

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl EntryCache {
    /// `None` when the configuration turns the cache off.
    pub(crate) fn new(config: CacheConfig) -> Option<Self> {
        if config.is_off() {
            return None;
        }
        let shard_entries = config.max_entries.div_ceil(SHARDS).max(1);
        let shard_bytes = config.max_bytes.div_ceil(SHARDS).max(ENTRY_OVERHEAD * 2);
        Some(Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: LruCache::new_unbounded(),
                        bytes: 0,
                        epoch: 0,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            shard_entries,
            shard_bytes,
            max_value: shard_bytes / 4,
        })
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Shard> {
        // A panic while holding a shard cannot leave it inconsistent in a
        // way that matters more than losing it: start the shard afresh.
        self.shards[shard].lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            guard.map.clear();
            guard.bytes = 0;
            guard.epoch += 1;
            guard
        })
    }

    pub(crate) fn lookup(&self, key: &str) -> Lookup {
        let shard = self.shard_of(key);
        let mut s = self.lock(shard);
        match s.map.get(key) {
            Some((value, generation)) => Lookup::Hit(Entry {
                key: key.to_string(),
                value: value.clone(),
                generation: *generation,
            }),
            None => Lookup::Miss(Ticket {
                shard,
                epoch: s.epoch,
            }),
        }
    }

    /// Stores what a missed read found, unless its shard changed meanwhile.
    /// Absent keys are not remembered.
    pub(crate) fn fill(&self, ticket: Ticket, entry: Option<&Entry>) {
        let Some(entry) = entry else { return };
        if cost(&entry.key, &entry.value) > self.max_value {
            return;
        }
        let mut s = self.lock(ticket.shard);
        if s.epoch != ticket.epoch {
            return;
        }
        self.insert_locked(&mut s, entry.key.clone(), entry.value.clone(), entry.generation);
    }

    fn insert_locked(&self, s: &mut Shard, key: String, value: Vec<u8>, generation: i64) {
        let added = cost(&key, &value);
        if let Some((old, _)) = s.map.insert(key.clone(), (value, generation)) {
            s.bytes -= cost(&key, &old);
        }
        s.bytes += added;
        while s.map.len() > self.shard_entries || s.bytes > self.shard_bytes {
            match s.map.remove_lru() {
                Some((k, (v, _))) => s.bytes -= cost(&k, &v),
                None => break,
            }
        }
    }

    /// After a durable commit of `ops`: puts become the cached value,
    /// deletes leave the cache. Takes the values (no copy).
    pub(crate) fn apply(&self, ops: Vec<Op>) {
        for op in ops {
            match op {
                Op::Put { entry, .. } => {
                    let shard = self.shard_of(&entry.key);
                    let mut s = self.lock(shard);
                    s.epoch += 1;
                    if cost(&entry.key, &entry.value) > self.max_value {
                        if let Some((old, _)) = s.map.remove(&entry.key) {
                            s.bytes -= cost(&entry.key, &old);
                        }
                    } else {
                        self.insert_locked(&mut s, entry.key, entry.value, entry.generation);
                    }
                }
                Op::Delete { key, .. } => self.invalidate(&key),
            }
        }
    }

    /// Forgets `key` (its stored state is unknown or changed).
    pub(crate) fn invalidate(&self, key: &str) {
        let shard = self.shard_of(key);
        let mut s = self.lock(shard);
        s.epoch += 1;
        if let Some((old, _)) = s.map.remove(key) {
            s.bytes -= cost(key, &old);
        }
    }

    /// Forgets everything (another connection changed the database).
    pub(crate) fn clear(&self) {
        for shard in 0..self.shards.len() {
            let mut s = self.lock(shard);
            s.epoch += 1;
            s.map.clear();
            s.bytes = 0;
        }
    }

    #[cfg(test)]
    fn totals(&self) -> (usize, usize) {
        (0..self.shards.len()).fold((0, 0), |(n, b), i| {
            let s = self.lock(i);
            (n + s.map.len(), b + s.bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Condition;

    fn entry(key: &str, value: &[u8], generation: i64) -> Entry {
        Entry {
            key: key.into(),
            value: value.to_vec(),
            generation,
        }
    }

    fn put(key: &str, value: &[u8], generation: i64) -> Op {
        Op::Put {
            entry: entry(key, value, generation),
            condition: Condition::Any,
        }
    }

    fn hit(cache: &EntryCache, key: &str) -> Option<Entry> {
        match cache.lookup(key) {
            Lookup::Hit(e) => Some(e),
            Lookup::Miss(_) => None,
        }
    }

    #[test]
    fn off_when_sized_zero() {
        assert!(EntryCache::new(CacheConfig::OFF).is_none());
        assert!(EntryCache::new(CacheConfig { max_entries: 10, max_bytes: 0 }).is_none());
    }

    #[test]
    fn fills_and_commits_keep_it_exact() {
        let cache = EntryCache::new(CacheConfig::default()).unwrap();
        let Lookup::Miss(t) = cache.lookup("a") else { panic!() };
        cache.fill(t, Some(&entry("a", b"v1", 1)));
        assert_eq!(hit(&cache, "a").unwrap().value, b"v1");
        cache.apply(vec![put("a", b"v2", 2)]);
        assert_eq!(hit(&cache, "a").unwrap(), entry("a", b"v2", 2));
        cache.apply(vec![Op::Delete { key: "a".into(), condition: Condition::Any }]);
        assert!(hit(&cache, "a").is_none());
        // Absent keys are not remembered.
        let Lookup::Miss(t) = cache.lookup("b") else { panic!() };
        cache.fill(t, None);
        assert!(hit(&cache, "b").is_none());
    }

    // A read that began before a commit must not put the old value back.
    #[test]
    fn a_fill_that_raced_a_commit_is_dropped() {
        let cache = EntryCache::new(CacheConfig::default()).unwrap();
        let Lookup::Miss(t) = cache.lookup("k") else { panic!() };
        cache.apply(vec![Op::Delete { key: "k".into(), condition: Condition::Any }]);
        cache.fill(t, Some(&entry("k", b"old", 1)));
        assert!(hit(&cache, "k").is_none());

        let Lookup::Miss(t) = cache.lookup("k") else { panic!() };
        cache.apply(vec![put("k", b"new", 2)]);
        cache.fill(t, Some(&entry("k", b"old", 1)));
        assert_eq!(hit(&cache, "k").unwrap().value, b"new");

        let Lookup::Miss(t) = cache.lookup("x") else { panic!() };
        cache.clear();
        cache.fill(t, Some(&entry("x", b"old", 1)));
        assert!(hit(&cache, "x").is_none());
    }

    #[test]
    fn bounded_by_entries_and_bytes() {
        let cache = EntryCache::new(CacheConfig { max_entries: 640, max_bytes: 1 << 20 }).unwrap();
        for i in 0..10_000 {
            cache.apply(vec![put(&format!("key/{i}"), &[0u8; 100], 1)]);
        }
        let (n, bytes) = cache.totals();
        assert!(n <= 640, "{n} entries");
        assert!(bytes <= 1 << 20);

        let cache = EntryCache::new(CacheConfig { max_entries: 100_000, max_bytes: 1 << 20 }).unwrap();
        for i in 0..10_000 {
            cache.apply(vec![put(&format!("key/{i}"), &[0u8; 1000], 1)]);
        }
        let (n, bytes) = cache.totals();
        assert!(bytes <= 1 << 20, "{bytes} bytes");
        assert!(n > 64, "{n} entries");
        // The newest are kept.
        assert!(hit(&cache, "key/9999").is_some());
        // Too large for the cache at all: not stored, and replaces nothing stale.
        cache.apply(vec![put("key/9999", &[0u8; 200_000], 2)]);
        assert!(hit(&cache, "key/9999").is_none());
    }
}
