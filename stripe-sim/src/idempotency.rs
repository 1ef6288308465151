//! The idempotency-key store, with Stripe's rules: per API key, in-flight marker,
//! stored first response (including 500s), parameter fingerprint, 24 h pruning.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Stripe's limit on the `Idempotency-Key` header.
pub const MAX_KEY_LEN: usize = 255;

/// A response stored under a key and replayed verbatim.
#[derive(Clone, Debug)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
    /// `Request-Id` of the request that produced it (sent back as `Original-Request`).
    pub request_id: String,
}

#[derive(Debug)]
enum Slot {
    InFlight,
    Done(StoredResponse),
}

#[derive(Debug)]
struct Entry {
    fingerprint: String,
    created: Instant,
    slot: Slot,
}

/// What to do with a request carrying a key.
#[derive(Debug)]
pub enum Begin {
    /// First use (or the previous use expired): the key is now in flight; execute.
    Execute,
    /// Completed before with the same parameters: replay this.
    Replay(StoredResponse),
    /// Completed with different parameters: 400 `idempotency_error`.
    Mismatch,
    /// Still running: 409 `idempotency_key_in_use`.
    InFlight,
}

/// Keys scoped by API key: `(api_key, idempotency_key)`.
type Scope = (String, String);

#[derive(Debug)]
pub struct IdempotencyStore {
    entries: HashMap<Scope, Entry>,
    ttl: Duration,
    last_prune: Instant,
}

impl IdempotencyStore {
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            ttl,
            last_prune: Instant::now(),
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Looks the key up and, if it is new (or expired), marks it in flight.
    pub fn begin(&mut self, api_key: &str, key: &str, fingerprint: &str, now: Instant) -> Begin {
        self.prune(now);
        let scope = (api_key.to_owned(), key.to_owned());
        if let Some(entry) = self.entries.get(&scope) {
            let expired = now.duration_since(entry.created) >= self.ttl;
            // An expired in-flight entry means a request stuck for a whole TTL: let the key
            // be reused rather than answering 409 forever.
            if !expired {
                return match &entry.slot {
                    // Stripe answers 409 to any use of a running key, whatever the params.
                    Slot::InFlight => Begin::InFlight,
                    Slot::Done(_) if entry.fingerprint != fingerprint => Begin::Mismatch,
                    Slot::Done(resp) => Begin::Replay(resp.clone()),
                };
            }
        }
        self.entries.insert(
            scope,
            Entry {
                fingerprint: fingerprint.to_owned(),
                created: now,
                slot: Slot::InFlight,
            },
        );
        Begin::Execute
    }

    /// Stores the response of an executed request.
    pub fn complete(&mut self, api_key: &str, key: &str, response: StoredResponse) {
        if let Some(entry) = self.entries.get_mut(&(api_key.to_owned(), key.to_owned())) {
            entry.slot = Slot::Done(response);
        }
    }

    /// Forgets an in-flight key whose request never executed (validation failed).
    pub fn abandon(&mut self, api_key: &str, key: &str) {
        let scope = (api_key.to_owned(), key.to_owned());
        if matches!(
            self.entries.get(&scope),
            Some(Entry {
                slot: Slot::InFlight,
                ..
            })
        ) {
            self.entries.remove(&scope);
        }
    }

    /// Drops completed entries older than the TTL, at most once a second: a full scan
    /// on every request would be quadratic over a long bench run.
    fn prune(&mut self, now: Instant) {
        if now.duration_since(self.last_prune) < Duration::from_secs(1) && !self.ttl.is_zero() {
            return;
        }
        self.last_prune = now;
        let ttl = self.ttl;
        self.entries
            .retain(|_, e| matches!(e.slot, Slot::InFlight) || now.duration_since(e.created) < ttl);
    }
}

/// A digest of the request parameters, independent of their order in the body.
pub fn fingerprint(method: &str, path: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b" ");
    hasher.update(path.as_bytes());
    for (k, v) in sorted {
        // Length prefixes keep ("a", "bc") and ("ab", "c") apart.
        hasher.update((k.len() as u64).to_le_bytes());
        hasher.update(k.as_bytes());
        hasher.update((v.len() as u64).to_le_bytes());
        hasher.update(v.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
// Test code: a failed unwrap is a failed test.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn resp(body: &str) -> StoredResponse {
        StoredResponse {
            status: 200,
            body: body.into(),
            request_id: "req_1".into(),
        }
    }

    #[test]
    fn lifecycle() {
        let mut s = IdempotencyStore::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(matches!(s.begin("sk", "k", "f", t0), Begin::Execute));
        assert!(matches!(s.begin("sk", "k", "f", t0), Begin::InFlight));
        assert!(matches!(s.begin("sk", "k", "g", t0), Begin::InFlight));
        // Another API key has its own key space.
        assert!(matches!(s.begin("sk2", "k", "g", t0), Begin::Execute));
        s.complete("sk", "k", resp("x"));
        assert!(matches!(s.begin("sk", "k", "f", t0), Begin::Replay(r) if r.body == "x"));
        assert!(matches!(s.begin("sk", "k", "g", t0), Begin::Mismatch));
        // After the TTL the key starts afresh.
        let later = t0 + Duration::from_secs(61);
        assert!(matches!(s.begin("sk", "k", "g", later), Begin::Execute));
    }

    #[test]
    fn abandon_only_in_flight() {
        let mut s = IdempotencyStore::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(matches!(s.begin("sk", "k", "f", t0), Begin::Execute));
        s.abandon("sk", "k");
        assert!(matches!(s.begin("sk", "k", "g", t0), Begin::Execute));
        s.complete("sk", "k", resp("y"));
        s.abandon("sk", "k");
        assert!(matches!(s.begin("sk", "k", "g", t0), Begin::Replay(_)));
    }

    #[test]
    fn fingerprint_ignores_order() {
        let a = [
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned()),
        ];
        let b = [
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ];
        assert_eq!(fingerprint("POST", "/x", &a), fingerprint("POST", "/x", &b));
        let c = [("a".to_owned(), "12".to_owned())];
        let d = [("a1".to_owned(), "2".to_owned())];
        assert_ne!(fingerprint("POST", "/x", &c), fingerprint("POST", "/x", &d));
    }
}
