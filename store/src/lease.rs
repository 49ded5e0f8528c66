//! Named leases and locks. A [`Lease`] lets one replica at a time do a job (relay the outbox,
//! drive rollouts): on PostgreSQL it is a session advisory lock held by a connection of
//! its own, so a replica that dies frees it with its connection; on SQLite the store belongs to
//! one process and every lease is granted at once.
//!
//! Every advisory-lock key is derived from a name (FNV-1a, 64 bits), so the keys say what they
//! are for and two names cannot be given the same number by hand.

use std::time::Duration;

use crate::{Pool, Store, StoreError};

/// A PostgreSQL advisory lock, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    name: &'static str,
    key: i64,
}

impl Lock {
    /// Taken shared by every transaction that adds outbox rows, before it draws `seq` values,
    /// and exclusive by the relay for an instant to learn up to which `seq` every row is
    /// visible (see [`crate::Outbox::read_after`]).
    pub const ENQUEUE: Lock = Lock::named("strangler.outbox.enqueue");
    /// Held while migrations are applied.
    pub(crate) const MIGRATE: Lock = Lock::named("strangler.migrate");

    pub const fn named(name: &'static str) -> Lock {
        Lock {
            name,
            key: fnv1a(name.as_bytes()),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The advisory-lock key.
    pub fn key(&self) -> i64 {
        self.key
    }
}

/// FNV-1a over `bytes`, as a signed key (PostgreSQL's advisory locks take a `bigint`).
const fn fnv1a(bytes: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h as i64
}

/// A job only one replica does at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease(Lock);

impl Lease {
    /// The relay: one replica sends the shared outbox to Kinesis.
    pub const RELAY: Lease = Lease(Lock::named("strangler.lease.relay"));
    /// The rollout controller: one replica decides every context's steps.
    pub const ROLLOUT: Lease = Lease(Lock::named("strangler.lease.rollout"));

    pub const fn named(name: &'static str) -> Lease {
        Lease(Lock::named(name))
    }

    pub fn name(&self) -> &'static str {
        self.0.name
    }
}

/// A held lease; dropping it frees the lease for another replica (PostgreSQL: the session
/// holding the lock closes).
pub struct LeaseGuard {
    _conn: Option<sqlx::PgConnection>,
}

/// How often a replica waiting for a lease asks again.
const RETRY: Duration = Duration::from_secs(1);

impl Store {
    /// Waits until this process holds `lease`. SQLite: at once (one process per store).
    pub async fn acquire(&self, lease: Lease) -> Result<LeaseGuard, StoreError> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(LeaseGuard { _conn: None });
        };
        loop {
            let mut conn = p.acquire().await?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(lease.0.key)
                .fetch_one(&mut *conn)
                .await?;
            if got {
                // Detached from the pool: dropping the guard closes the session.
                return Ok(LeaseGuard {
                    _conn: Some(conn.detach()),
                });
            }
            drop(conn);
            tokio::time::sleep(RETRY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_name() {
        // The published FNV-1a 64 test vector for "a".
        assert_eq!(fnv1a(b"a") as u64, 0xaf63_dc4c_8601_ec8c);
        assert_ne!(Lock::ENQUEUE.key(), Lock::MIGRATE.key());
        assert_ne!(Lease::RELAY.0.key(), Lock::ENQUEUE.key());
        assert_eq!(Lease::named("x"), Lease::named("x"));
    }
}
