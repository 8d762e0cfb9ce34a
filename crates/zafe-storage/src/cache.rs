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
//! It also remembers keys found absent (a KV mount without a `config`
//! record is read on every write), in a separate, smaller LRU per shard, so
//! that lookups of keys that do not exist (random tokens, say) can only
//! churn that part and never evict stored entries.
//!
//! # Staying exact
//!
//! The owner of the cache (the SQLite backend) keeps it exact:
//!
//! - every local commit updates it *after* the commit is durable and
//!   *before* any caller is answered: a put of a key the cache holds (or
//!   knows absent) stores the new value and generation, a delete of one
//!   marks it absent, and any other key of the commit is only invalidated
//!   (so the cache holds what is read, not everything written); the update
//!   runs where it cannot be cancelled (the writer thread, or a spawned
//!   task);
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

/// Rough per-entry overhead (LRU node, hash slot, two heap allocations and
/// their malloc headers) counted against the byte budget on top of the key
/// and value lengths.
const ENTRY_OVERHEAD: usize = 160;

/// How big the SQLite backend's entry cache may get (PostgreSQL has none:
/// other nodes write to the same database). Zero entries or zero bytes turns
/// it off. The cache holds only what the database holds (ciphertext and
/// generations), so its size is a memory budget, not a security setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// The most stored entries held (rounded up to a multiple of the shard
    /// count); keys known to be absent get a further quarter of this.
    pub max_entries: usize,
    /// The most bytes held (rounded up per shard): key and value lengths
    /// plus a fixed per-entry overhead estimate. An entry costing more than
    /// a quarter of one shard's budget is never cached.
    pub max_bytes: usize,
}

impl CacheConfig {
    /// [`CacheConfig::max_entries`] when nothing is configured.
    pub const DEFAULT_ENTRIES: usize = 10_000;
    /// [`CacheConfig::max_bytes`] when nothing is configured: 4 MiB.
    pub const DEFAULT_BYTES: usize = 4 * 1024 * 1024;

    /// No cache: every read goes to the database. The default of
    /// [`SqliteOptions`](crate::sqlite::SqliteOptions).
    pub const OFF: CacheConfig = CacheConfig {
        max_entries: 0,
        max_bytes: 0,
    };

    /// Whether this configuration disables the cache (either limit is zero).
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
    /// Keys known to be absent.
    absent: LruCache<String, ()>,
    /// Of `map` and `absent` together.
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
    /// Known to be absent.
    Absent,
    Miss(Ticket),
}

pub(crate) struct EntryCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    shard_entries: usize,
    shard_absent: usize,
    shard_bytes: usize,
    /// Larger values are never cached (they would evict many small ones).
    max_value: usize,
}

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

/// Remembered absent keys: at most this fraction of the entries.
const ABSENT_SHARE: usize = 4;

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
                        absent: LruCache::new_unbounded(),
                        bytes: 0,
                        epoch: 0,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            shard_entries,
            shard_absent: (shard_entries / ABSENT_SHARE).max(1),
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
            guard.absent.clear();
            guard.bytes = 0;
            guard.epoch += 1;
            guard
        })
    }

    pub(crate) fn lookup(&self, key: &str) -> Lookup {
        let shard = self.shard_of(key);
        let mut s = self.lock(shard);
        if let Some((value, generation)) = s.map.get(key) {
            return Lookup::Hit(Entry {
                key: key.to_string(),
                value: value.clone(),
                generation: *generation,
            });
        }
        if s.absent.get(key).is_some() {
            return Lookup::Absent;
        }
        Lookup::Miss(Ticket {
            shard,
            epoch: s.epoch,
        })
    }

    /// Stores what a missed read of `key` found, unless its shard changed
    /// meanwhile.
    pub(crate) fn fill(&self, ticket: Ticket, key: &str, entry: Option<&Entry>) {
        let mut s = self.lock(ticket.shard);
        if s.epoch != ticket.epoch {
            return;
        }
        match entry {
            Some(entry) if cost(&entry.key, &entry.value) <= self.max_value => {
                self.insert_locked(
                    &mut s,
                    entry.key.clone(),
                    entry.value.clone(),
                    entry.generation,
                );
            }
            Some(_) => {}
            None => self.insert_absent_locked(&mut s, key),
        }
    }

    fn forget_locked(s: &mut Shard, key: &str) {
        if let Some((old, _)) = s.map.remove(key) {
            s.bytes -= cost(key, &old);
        }
        if s.absent.remove(key).is_some() {
            s.bytes -= cost(key, &[]);
        }
    }

    fn insert_locked(&self, s: &mut Shard, key: String, value: Vec<u8>, generation: i64) {
        if s.absent.remove(&key).is_some() {
            s.bytes -= cost(&key, &[]);
        }
        let added = cost(&key, &value);
        if let Some((old, _)) = s.map.insert(key.clone(), (value, generation)) {
            s.bytes -= cost(&key, &old);
        }
        s.bytes += added;
        self.evict_locked(s);
    }

    fn insert_absent_locked(&self, s: &mut Shard, key: &str) {
        if cost(key, &[]) > self.max_value {
            return;
        }
        if let Some((old, _)) = s.map.remove(key) {
            s.bytes -= cost(key, &old);
        }
        if s.absent.insert(key.to_string(), ()).is_none() {
            s.bytes += cost(key, &[]);
        }
        while s.absent.len() > self.shard_absent {
            match s.absent.remove_lru() {
                Some((k, ())) => s.bytes -= cost(&k, &[]),
                None => break,
            }
        }
        self.evict_locked(s);
    }

    /// Over the byte budget, absent keys go first.
    fn evict_locked(&self, s: &mut Shard) {
        while s.map.len() > self.shard_entries || s.bytes > self.shard_bytes {
            if s.bytes > self.shard_bytes
                && let Some((k, ())) = s.absent.remove_lru()
            {
                s.bytes -= cost(&k, &[]);
                continue;
            }
            match s.map.remove_lru() {
                Some((k, (v, _))) => s.bytes -= cost(&k, &v),
                None => break,
            }
        }
    }

    /// After a durable commit of `ops`: keys the cache knows take their new
    /// state (a put's value, or absent after a delete); other keys are left
    /// out, so that writes do not push out what is read. Takes the values
    /// (no copy).
    pub(crate) fn apply(&self, ops: Vec<Op>) {
        for op in ops {
            let key = match &op {
                Op::Put { entry, .. } => &entry.key,
                Op::Delete { key, .. } => key,
            };
            let shard = self.shard_of(key);
            let mut s = self.lock(shard);
            s.epoch += 1;
            let known = s.map.contains_key(key.as_str()) || s.absent.contains_key(key.as_str());
            match op {
                Op::Put { entry, .. }
                    if known && cost(&entry.key, &entry.value) <= self.max_value =>
                {
                    self.insert_locked(&mut s, entry.key, entry.value, entry.generation);
                }
                Op::Delete { key, .. } if known => self.insert_absent_locked(&mut s, &key),
                Op::Put { entry, .. } => Self::forget_locked(&mut s, &entry.key),
                Op::Delete { key, .. } => Self::forget_locked(&mut s, &key),
            }
        }
    }

    /// After a commit of `ops` that succeeded ([`Cache::apply`]) or failed
    /// (every key it touched is forgotten: whether it was written is not
    /// known).
    pub(crate) fn follow(&self, ops: Vec<Op>, committed: bool) {
        if committed {
            return self.apply(ops);
        }
        for op in &ops {
            self.invalidate(match op {
                Op::Put { entry, .. } => &entry.key,
                Op::Delete { key, .. } => key,
            });
        }
    }

    /// Forgets `key` (its stored state is unknown or changed).
    pub(crate) fn invalidate(&self, key: &str) {
        let shard = self.shard_of(key);
        let mut s = self.lock(shard);
        s.epoch += 1;
        Self::forget_locked(&mut s, key);
    }

    /// Forgets everything (another connection changed the database).
    pub(crate) fn clear(&self) {
        for shard in 0..self.shards.len() {
            let mut s = self.lock(shard);
            s.epoch += 1;
            s.map.clear();
            s.absent.clear();
            s.bytes = 0;
        }
    }

    #[cfg(test)]
    fn totals(&self) -> (usize, usize) {
        (0..self.shards.len()).fold((0, 0), |(n, b), i| {
            let s = self.lock(i);
            (n + s.map.len() + s.absent.len(), b + s.bytes)
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
            Lookup::Absent | Lookup::Miss(_) => None,
        }
    }

    fn known_absent(cache: &EntryCache, key: &str) -> bool {
        matches!(cache.lookup(key), Lookup::Absent)
    }

    #[test]
    fn off_when_sized_zero() {
        assert!(EntryCache::new(CacheConfig::OFF).is_none());
        assert!(
            EntryCache::new(CacheConfig {
                max_entries: 10,
                max_bytes: 0
            })
            .is_none()
        );
    }

    /// What a read that missed does.
    fn read(cache: &EntryCache, key: &str, stored: Option<Entry>) {
        if let Lookup::Miss(t) = cache.lookup(key) {
            cache.fill(t, key, stored.as_ref());
        }
    }

    fn delete(key: &str) -> Op {
        Op::Delete {
            key: key.into(),
            condition: Condition::Any,
        }
    }

    #[test]
    fn fills_and_commits_keep_it_exact() {
        let cache = EntryCache::new(CacheConfig::default()).unwrap();
        // A key nobody read is not taken in by a write.
        cache.apply(vec![put("w", b"v1", 1)]);
        assert!(matches!(cache.lookup("w"), Lookup::Miss(_)));
        read(&cache, "a", Some(entry("a", b"v1", 1)));
        assert_eq!(hit(&cache, "a").unwrap().value, b"v1");
        cache.apply(vec![put("a", b"v2", 2)]);
        assert_eq!(hit(&cache, "a").unwrap(), entry("a", b"v2", 2));
        cache.apply(vec![delete("a")]);
        assert!(known_absent(&cache, "a"));
        cache.apply(vec![put("a", b"v1", 1)]);
        assert_eq!(hit(&cache, "a").unwrap(), entry("a", b"v1", 1));
        // Absent keys are remembered until written.
        read(&cache, "b", None);
        assert!(known_absent(&cache, "b"));
        cache.apply(vec![put("b", b"v1", 1)]);
        assert_eq!(hit(&cache, "b").unwrap().value, b"v1");
        cache.invalidate("b");
        assert!(matches!(cache.lookup("b"), Lookup::Miss(_)));
        // Too large to keep: a write of one drops the old value.
        read(&cache, "big", Some(entry("big", b"small", 1)));
        cache.apply(vec![put("big", &[0u8; 200_000], 2)]);
        assert!(matches!(cache.lookup("big"), Lookup::Miss(_)));
    }

    // A flood of lookups of keys that do not exist cannot evict stored
    // entries.
    #[test]
    fn absent_keys_never_evict_entries() {
        let cache = EntryCache::new(CacheConfig {
            max_entries: 640,
            max_bytes: 1 << 20,
        })
        .unwrap();
        for i in 0..500 {
            let key = format!("real/{i}");
            read(&cache, &key, Some(entry(&key, &[0u8; 100], 1)));
        }
        let before: Vec<bool> = (0..500)
            .map(|i| hit(&cache, &format!("real/{i}")).is_some())
            .collect();
        assert!(before.iter().filter(|k| **k).count() > 400);
        for i in 0..100_000 {
            read(&cache, &format!("sys/token/id/{i:064}"), None);
        }
        let after: Vec<bool> = (0..500)
            .map(|i| hit(&cache, &format!("real/{i}")).is_some())
            .collect();
        assert_eq!(before, after);
        let (n, bytes) = cache.totals();
        assert!(n <= 640 + 640 / ABSENT_SHARE + 64, "{n}");
        assert!(bytes <= 1 << 20);
    }

    // A read that began before a commit must not put the old value back.
    #[test]
    fn a_fill_that_raced_a_commit_is_dropped() {
        let cache = EntryCache::new(CacheConfig::default()).unwrap();
        let Lookup::Miss(t) = cache.lookup("k") else {
            panic!()
        };
        cache.apply(vec![delete("k")]);
        cache.fill(t, "k", Some(&entry("k", b"old", 1)));
        assert!(matches!(cache.lookup("k"), Lookup::Miss(_)));

        let Lookup::Miss(t) = cache.lookup("k") else {
            panic!()
        };
        cache.apply(vec![put("k", b"new", 2)]);
        cache.fill(t, "k", Some(&entry("k", b"old", 1)));
        assert!(matches!(cache.lookup("k"), Lookup::Miss(_)));

        // A miss that found nothing must not hide a concurrent create.
        let Lookup::Miss(t) = cache.lookup("n") else {
            panic!()
        };
        cache.apply(vec![put("n", b"created", 1)]);
        cache.fill(t, "n", None);
        assert!(matches!(cache.lookup("n"), Lookup::Miss(_)));

        // Nor one that raced a clear.
        let Lookup::Miss(t) = cache.lookup("x") else {
            panic!()
        };
        cache.clear();
        cache.fill(t, "x", Some(&entry("x", b"old", 1)));
        assert!(matches!(cache.lookup("x"), Lookup::Miss(_)));
    }

    #[test]
    fn bounded_by_entries_and_bytes() {
        let cache = EntryCache::new(CacheConfig {
            max_entries: 640,
            max_bytes: 1 << 20,
        })
        .unwrap();
        for i in 0..10_000 {
            let key = format!("key/{i}");
            read(&cache, &key, Some(entry(&key, &[0u8; 100], 1)));
        }
        let (n, bytes) = cache.totals();
        assert!(n <= 640, "{n} entries");
        assert!(bytes <= 1 << 20);

        let cache = EntryCache::new(CacheConfig {
            max_entries: 100_000,
            max_bytes: 1 << 20,
        })
        .unwrap();
        for i in 0..10_000 {
            let key = format!("key/{i}");
            read(&cache, &key, Some(entry(&key, &[0u8; 1000], 1)));
        }
        let (n, bytes) = cache.totals();
        assert!(bytes <= 1 << 20, "{bytes} bytes");
        assert!(n > 64, "{n} entries");
        // The newest are kept.
        assert!(hit(&cache, "key/9999").is_some());
    }
}
