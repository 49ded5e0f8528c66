//! Named leases and locks. A [`Lease`] lets one replica at a time do a job (drive the rollouts;
//! the relay's leases, one per stream, are a [`crate::LeaseSet`] built on the same parts): on
//! PostgreSQL it is a session advisory lock held by a connection of its own, so a replica that
//! dies frees it with its connection; on SQLite the store belongs to one process and every
//! lease is granted at once.
//!
//! Leases are fenced: each holder gets a new generation of the lease (`strangler_leases`),
//! checks on a heartbeat that it still holds it, and writes made under it carry a [`Fence`] the
//! store compares, so a holder that lost its session cannot commit after another took over.
//!
//! Every advisory-lock key is derived from a name (FNV-1a, 64 bits), so the keys say what they
//! are for and two names cannot be given the same number by hand.

use std::time::Duration;

use tokio::sync::watch;

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
pub(crate) const fn fnv1a(bytes: &[u8]) -> i64 {
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
    /// The rollout controller: one replica decides every context's steps.
    pub const ROLLOUT: Lease = Lease(Lock::named("strangler.lease.rollout"));

    pub const fn named(name: &'static str) -> Lease {
        Lease(Lock::named(name))
    }

    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// Its advisory-lock key (to find its holder in `pg_locks`).
    pub fn key(&self) -> i64 {
        self.0.key
    }
}

/// What a write made under a lease carries: the lease and the generation this holder was given.
/// The store refuses the write ([`StoreError::LeaseLost`]) once another holder took the lease
/// (and so a higher generation), so a holder that lost its session cannot commit anything
/// after the next one started acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: std::sync::Arc<str>,
    pub generation: i64,
}

/// A held lease; dropping it frees the lease for another replica (PostgreSQL: the session
/// holding the lock closes). On PostgreSQL a heartbeat on the lease's own connection checks,
/// every [`HEARTBEAT`], that the session lives and the lease is still this holder's; when it is
/// not (the session was terminated, the server restarted or failed over, an idle timeout), the
/// guard says so ([`LeaseGuard::lost`]) within two heartbeats, and the holder must stop acting.
pub struct LeaseGuard {
    fence: Option<Fence>,
    held: watch::Receiver<bool>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl LeaseGuard {
    /// The token writes under this lease carry (`None` on SQLite: one process per store).
    pub fn fence(&self) -> Option<Fence> {
        self.fence.clone()
    }

    /// Whether the lease is still held, as of the last heartbeat.
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Resolves once the lease is lost (never on SQLite).
    pub async fn lost(&mut self) {
        let _ = self.held.wait_for(|held| !*held).await;
        if self.heartbeat.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

/// How often a replica waiting for a lease asks again.
const RETRY: Duration = Duration::from_secs(1);
/// How often a holder checks its lease (each check may take as long again).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A new holder waits until this long after its predecessor's last heartbeat before acting:
/// by then the predecessor has noticed the loss and stopped.
pub(crate) const TAKEOVER_AFTER: Duration = Duration::from_secs(3);

impl Store {
    /// Waits until this process holds `lease`. SQLite: at once (one process per store).
    /// PostgreSQL: a session advisory lock on a connection of its own, a new generation of the
    /// lease (its [`Fence`]), and a heartbeat on that connection.
    pub async fn acquire(&self, lease: Lease) -> Result<LeaseGuard, StoreError> {
        let Pool::Postgres(p) = &self.pool else {
            let (_tx, held) = watch::channel(true);
            return Ok(LeaseGuard {
                fence: None,
                held,
                heartbeat: None,
            });
        };
        const TAKE: &str = "INSERT INTO strangler_leases (name, generation, holder, renewed_ms) \
            VALUES ($1, 1, pg_backend_pid(), $2) ON CONFLICT (name) DO UPDATE SET \
            generation = strangler_leases.generation + 1, holder = excluded.holder, renewed_ms = excluded.renewed_ms \
            RETURNING generation, (SELECT renewed_ms FROM strangler_leases WHERE name = $1)";
        loop {
            let mut conn = p.acquire().await?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(lease.0.key)
                .fetch_one(&mut *conn)
                .await?;
            if !got {
                drop(conn);
                tokio::time::sleep(RETRY).await;
                continue;
            }
            // Detached from the pool: dropping the guard closes the session.
            let mut conn = conn.detach();
            let (generation, before): (i64, Option<i64>) = sqlx::query_as(TAKE)
                .bind(lease.name())
                .bind(crate::now_ms())
                .fetch_one(&mut conn)
                .await?;
            // The predecessor may have lost its session a moment ago and not noticed yet.
            if let Some(last) = before {
                let quiet = Duration::from_millis((crate::now_ms() - last).max(0) as u64);
                if let Some(wait) = TAKEOVER_AFTER.checked_sub(quiet) {
                    tokio::time::sleep(wait).await;
                }
            }
            let fence = Fence {
                lease: lease.name().into(),
                generation,
            };
            let (tx, held) = watch::channel(true);
            let heartbeat = tokio::spawn(heartbeat(conn, fence.clone(), tx));
            return Ok(LeaseGuard {
                fence: Some(fence),
                held,
                heartbeat: Some(heartbeat),
            });
        }
    }
}

/// A connection a fenced write checks its fence on, inside the write's transaction.
pub(crate) trait CheckFence {
    /// `Ok` while `fence` is still the lease's generation; `LeaseLost` once another holder took
    /// it.
    fn check_fence(
        &mut self,
        fence: &Fence,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

impl CheckFence for sqlx::PgConnection {
    /// Holds the lease row shared, so no other holder can take the lease before the write's
    /// transaction ends.
    async fn check_fence(&mut self, fence: &Fence) -> Result<(), StoreError> {
        let now: Option<i64> =
            sqlx::query_scalar("SELECT generation FROM strangler_leases WHERE name = $1 FOR SHARE")
                .bind(&*fence.lease)
                .fetch_optional(self)
                .await?;
        if now == Some(fence.generation) {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(fence.lease.to_string()))
        }
    }
}

impl CheckFence for sqlx::SqliteConnection {
    /// A SQLite store belongs to one process, whose leases are granted at once and never lost
    /// (`acquire` hands out no fence there): nothing to check.
    async fn check_fence(&mut self, _fence: &Fence) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Renews the lease on its own connection every [`HEARTBEAT`] (which proves the session, and so
/// the advisory lock, alive and the lease still this generation's); says `false` and ends
/// (closing the session) at the first failure or a check that takes longer than a heartbeat.
async fn heartbeat(mut conn: sqlx::PgConnection, fence: Fence, held: watch::Sender<bool>) {
    const RENEW: &str =
        "UPDATE strangler_leases SET renewed_ms = $3 WHERE name = $1 AND generation = $2";
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let renew = sqlx::query(RENEW)
            .bind(&*fence.lease)
            .bind(fence.generation)
            .bind(crate::now_ms())
            .execute(&mut conn);
        let why = match tokio::time::timeout(HEARTBEAT, renew).await {
            Ok(Ok(r)) if r.rows_affected() == 1 => continue,
            Ok(Ok(_)) => "another holder took it".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {HEARTBEAT:?}"),
        };
        tracing::warn!(lease = &*fence.lease, generation = fence.generation, error = %why, "Lease lost: this replica stops acting under it");
        held.send_replace(false);
        return;
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
        assert_ne!(Lease::ROLLOUT.0.key(), Lock::ENQUEUE.key());
        assert_eq!(Lease::named("x"), Lease::named("x"));
    }
}
