use std::collections::HashMap;
use std::hash::Hash;

/// A least-recently-used cache with a fixed capacity.
///
/// Lookups move the entry to the front; inserting into a full cache evicts the
/// least recently used entry.
pub struct LruCache<K, V> {
    capacity: usize,
    map: HashMap<K, (V, u64)>,
    clock: u64,
}

impl<K: Hash + Eq + Clone, V> LruCache<K, V> {
    /// A cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            map: HashMap::new(),
            clock: 0,
        }
    }

    /// Returns the value of `key` and marks it as recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.clock += 1;
        let now = self.clock;
        self.map.get_mut(key).map(|(v, t)| {
            *t = now;
            &*v
        })
    }

    /// Inserts `value`, evicting the least recently used entry when full.
    pub fn put(&mut self, key: K, value: V) -> Option<V> {
        self.clock += 1;
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(key, (value, self.clock)).map(|(v, _)| v)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl<K: Hash + Eq + Clone, V> Default for LruCache<K, V> {
    fn default() -> Self {
        Self::new(128)
    }
}

pub mod stats {
    //! Hit/miss accounting.

    /// Hit and miss counters.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Stats {
        pub hits: u64,
        pub misses: u64,
    }

    impl Stats {
        /// The fraction of lookups that hit, or 0 when there were none.
        pub fn hit_rate(&self) -> f64 {
            let total = self.hits + self.misses;
            if total == 0 { 0.0 } else { self.hits as f64 / total as f64 }
        }
    }
}
