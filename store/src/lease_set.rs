//! Leases of one kind shared out among the replicas: the relay's, one per stream
//! (`relay:<stream>`), so each stream is sent by one replica at a time and the streams spread
//! across the replicas instead of one replica relaying them all.
//!
//! On PostgreSQL each replica holds its share on one session of its own, whatever the number of
//! streams: every lease is a session advisory lock (freed the moment the replica's session ends:
//! `kill -9`, a lost connection) with a fenced generation in `strangler_leases`, as a single
//! [`crate::Lease`]; one heartbeat renews them all. The replicas relaying are counted by a shared
//! advisory lock each of their sessions holds (`pg_locks`), and the set's names are the rows of
//! `strangler_leases` named `<kind>:…` ([`LeaseSet::know`] adds them). Each round a replica
//! takes free leases up to its fair share (the names over the replicas, rounded up) and is told
//! which it holds beyond it, to hand back once the work under them is settled
//! ([`LeaseSet::release`]): a lease moves between replicas only after its holder stopped, or
//! after its holder's session died and the quiet time of [`crate::lease`] passed.
//!
//! On SQLite the store belongs to one process: every lease is its own, unfenced.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgConnection;
use tokio::sync::watch;

use crate::lease::{Fence, HEARTBEAT, TAKEOVER_AFTER, fnv1a};
use crate::{Pool, Store, StoreError};

/// A replica's share of the leases of one kind.
pub struct LeaseSet {
    kind: &'static str,
    /// PostgreSQL: the session holding the leases. `None` on SQLite.
    session: Option<Arc<Session>>,
    held: watch::Receiver<bool>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

struct Session {
    conn: tokio::sync::Mutex<PgConnection>,
    /// Name → this holder's generation, for the heartbeat and the fences.
    held: Mutex<BTreeMap<String, i64>>,
}

/// What a round changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Leases taken in this round (the work under them starts now).
    pub taken: Vec<String>,
    /// Leases held beyond this replica's fair share: hand them back once their work is settled.
    pub over: Vec<String>,
    /// Every name of the set, held or not.
    pub names: Vec<String>,
}

/// How many of `names` leases each of `members` replicas holds at most.
pub fn fair_share(names: usize, members: usize) -> usize {
    names.div_ceil(members.max(1))
}

impl Store {
    /// Joins the replicas sharing the leases of `kind`. PostgreSQL: opens the session they are
    /// held on (one per replica) and starts its heartbeat; SQLite: every lease is held.
    pub async fn lease_set(&self, kind: &'static str) -> Result<LeaseSet, StoreError> {
        let Pool::Postgres(p) = &self.pool else {
            let (_tx, held) = watch::channel(true);
            return Ok(LeaseSet {
                kind,
                session: None,
                held,
                heartbeat: None,
            });
        };
        let mut conn = p.acquire().await?.detach();
        sqlx::query("SELECT pg_advisory_lock_shared($1)")
            .bind(members_key(kind))
            .execute(&mut conn)
            .await?;
        let session = Arc::new(Session {
            conn: tokio::sync::Mutex::new(conn),
            held: Mutex::new(BTreeMap::new()),
        });
        let (tx, held) = watch::channel(true);
        let heartbeat = tokio::spawn(heartbeat(Arc::clone(&session), tx));
        Ok(LeaseSet {
            kind,
            session: Some(session),
            held,
            heartbeat: Some(heartbeat),
        })
    }
}

/// The advisory-lock key every replica of `kind` holds shared while it takes part.
fn members_key(kind: &str) -> i64 {
    fnv1a(format!("strangler.members.{kind}").as_bytes())
}

/// The advisory-lock key of the lease `name` (`relay:orders`).
pub fn lease_key(name: &str) -> i64 {
    fnv1a(format!("strangler.lease.{name}").as_bytes())
}

impl LeaseSet {
    /// The lease's name for `member` of the set (`relay:orders`).
    pub fn name(&self, member: &str) -> String {
        format!("{}:{member}", self.kind)
    }

    /// Whether this replica holds `member`'s lease (SQLite: always).
    pub fn holds(&self, member: &str) -> bool {
        match &self.session {
            None => true,
            Some(s) => lock(&s.held).contains_key(&self.name(member)),
        }
    }

    /// The token writes under `member`'s lease carry (`None` on SQLite, or when not held).
    pub fn fence(&self, member: &str) -> Option<Fence> {
        let s = self.session.as_ref()?;
        let name = self.name(member);
        let generation = *lock(&s.held).get(&name)?;
        Some(Fence {
            lease: name.into(),
            generation,
        })
    }

    /// The members whose leases this replica holds (PostgreSQL; empty on SQLite, where every
    /// one is).
    pub fn held(&self) -> Vec<String> {
        let Some(s) = &self.session else {
            return Vec::new();
        };
        let prefix = format!("{}:", self.kind);
        lock(&s.held)
            .keys()
            .filter_map(|n| n.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// Adds `members` to the set the replicas share out (a row each in `strangler_leases`, free).
    pub async fn know(&self, members: &[&str]) -> Result<(), StoreError> {
        let Some(s) = &self.session else {
            return Ok(());
        };
        let names: Vec<String> = members.iter().map(|m| self.name(m)).collect();
        let mut conn = s.conn.lock().await;
        sqlx::query(
            "INSERT INTO strangler_leases (name, generation, holder, renewed_ms) \
             SELECT name, 0, 0, 0 FROM unnest($1::text[]) AS name ON CONFLICT (name) DO NOTHING",
        )
        .bind(&names)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// One round: takes free leases up to this replica's fair share and says which it holds
    /// beyond it. A lease whose previous holder was heard from within the quiet time is acted
    /// under only once that time has passed (this waits for it): by then a holder that lost its
    /// session has noticed and stopped.
    pub async fn round(&mut self) -> Result<Round, StoreError> {
        let Some(s) = &self.session else {
            return Ok(Round::default());
        };
        let prefix = format!("{}:", self.kind);
        let mut conn = s.conn.lock().await;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM strangler_leases WHERE starts_with(name, $1) ORDER BY name",
        )
        .bind(&prefix)
        .fetch_all(&mut *conn)
        .await?;
        let key = members_key(self.kind);
        let members: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
             AND classid::bigint = $1 AND objid::bigint = $2 \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind((key >> 32) & 0xffff_ffff)
        .bind(key & 0xffff_ffff)
        .fetch_one(&mut *conn)
        .await?;
        let fair = fair_share(names.len(), members as usize);
        let mine: BTreeSet<String> = lock(&s.held).keys().cloned().collect();
        let mut round = Round::default();
        // Free leases, tried from a place of this session's own so replicas do not all reach
        // for the same one first.
        let start = (std::process::id() as usize) % names.len().max(1);
        let mut quiet_until = 0i64;
        let mut count = mine.len();
        for name in names[start..].iter().chain(&names[..start]) {
            if count >= fair {
                break;
            }
            if mine.contains(name) {
                continue;
            }
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(lease_key(name))
                .fetch_one(&mut *conn)
                .await?;
            if !got {
                continue;
            }
            let take = sqlx::query_as(
                "UPDATE strangler_leases SET generation = generation + 1, holder = pg_backend_pid(), \
                 renewed_ms = $2 WHERE name = $1 \
                 RETURNING generation, (SELECT renewed_ms FROM strangler_leases WHERE name = $1)",
            )
            .bind(name)
            .bind(crate::now_ms())
            .fetch_one(&mut *conn)
            .await;
            let (generation, before): (i64, i64) = match take {
                Ok(taken) => taken,
                Err(e) => {
                    // Not left locked and unused (if the session itself failed, it goes anyway).
                    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(lease_key(name))
                        .execute(&mut *conn)
                        .await;
                    return Err(e.into());
                }
            };
            quiet_until = quiet_until.max(before + TAKEOVER_AFTER.as_millis() as i64);
            lock(&s.held).insert(name.clone(), generation);
            round.taken.push(strip(name, &prefix));
            count += 1;
        }
        drop(conn);
        if count > fair {
            // The last ones by name, so every replica over its share hands back the same way.
            round.over = mine
                .iter()
                .rev()
                .take(count - fair)
                .map(|n| strip(n, &prefix))
                .collect();
        }
        round.names = names.iter().map(|n| strip(n, &prefix)).collect();
        let wait = quiet_until - crate::now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        Ok(round)
    }

    /// Hands `member`'s lease back (its work settled): the next holder acts at once, without the
    /// quiet time a lost session calls for.
    pub async fn release(&mut self, member: &str) -> Result<(), StoreError> {
        let Some(s) = &self.session else {
            return Ok(());
        };
        let name = self.name(member);
        let mut conn = s.conn.lock().await;
        let Some(generation) = lock(&s.held).remove(&name) else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE strangler_leases SET renewed_ms = 0 WHERE name = $1 AND generation = $2",
        )
        .bind(&name)
        .bind(generation)
        .execute(&mut *conn)
        .await?;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(lease_key(&name))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Resolves once the session is lost (never on SQLite): every lease of the set is lost with
    /// it, and the holder must stop acting under them.
    pub fn on_lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut held = self.held.clone();
        let never = self.heartbeat.is_none();
        async move {
            if never {
                std::future::pending::<()>().await;
            }
            let _ = held.wait_for(|held| !*held).await;
        }
    }
}

impl Drop for LeaseSet {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

fn strip(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Renews every lease of the session each [`HEARTBEAT`] (proving the session, and so its
/// advisory locks, alive and each lease still this holder's generation); says `false` and ends
/// (closing the session) at the first failure, a lease found taken, or a check that takes longer
/// than a heartbeat.
async fn heartbeat(session: Arc<Session>, held: watch::Sender<bool>) {
    const RENEW: &str = "UPDATE strangler_leases SET renewed_ms = $1 \
        FROM unnest($2::text[], $3::bigint[]) AS h(name, generation) \
        WHERE strangler_leases.name = h.name AND strangler_leases.generation = h.generation";
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let renew = async {
            let mut conn = session.conn.lock().await;
            let (names, generations): (Vec<String>, Vec<i64>) = lock(&session.held)
                .iter()
                .map(|(n, g)| (n.clone(), *g))
                .unzip();
            let n = sqlx::query(RENEW)
                .bind(crate::now_ms())
                .bind(&names)
                .bind(&generations)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok::<_, sqlx::Error>((n, names.len() as u64))
        };
        let why = match tokio::time::timeout(HEARTBEAT, renew).await {
            Ok(Ok((n, want))) if n == want => continue,
            Ok(Ok(_)) => "another holder took one of them".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {HEARTBEAT:?}"),
        };
        let names: Vec<String> = lock(&session.held).keys().cloned().collect();
        tracing::warn!(leases = ?names, error = %why, "Leases lost: this replica stops acting under them");
        held.send_replace(false);
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fair_share_rounds_up_so_every_name_has_a_holder() {
        assert_eq!(fair_share(6, 3), 2);
        assert_eq!(fair_share(7, 3), 3);
        assert_eq!(fair_share(2, 3), 1);
        assert_eq!(fair_share(0, 3), 0);
        assert_eq!(fair_share(5, 0), 5);
        for names in 0..40 {
            for members in 1..8 {
                assert!(fair_share(names, members) * members >= names);
            }
        }
    }

    #[test]
    fn lease_keys_differ_by_name() {
        assert_ne!(lease_key("relay:a"), lease_key("relay:b"));
        assert_ne!(lease_key("relay:a"), members_key("relay"));
    }
}
