//! The store a test runs against: SQLite in a temp dir, or a scratch PostgreSQL database of its
//! own (dropped afterwards), as [`Store::sqlite`] and [`Store::postgres`].

use std::process::{Command, Stdio};
use std::sync::Arc;

use strangler_events::Outbox;

/// A store for one test. Clones share it; it goes (its folder removed, its database dropped)
/// with the last of them, and a proxy given it keeps a clone: a proxy started with
/// `.store(&Store::sqlite())` must not lose its database folder at the end of that statement
/// (SQLite then fails to open its next connection).
#[derive(Clone)]
pub enum Store {
    Sqlite(Arc<tempfile::TempDir>),
    Postgres(Arc<ScratchDb>),
}

impl Store {
    pub fn sqlite() -> Store {
        Store::Sqlite(Arc::new(tempfile::tempdir().unwrap()))
    }

    pub async fn postgres() -> Store {
        Store::Postgres(Arc::new(ScratchDb::create().await))
    }

    /// PostgreSQL when `postgres`, else SQLite.
    pub async fn new(postgres: bool) -> Store {
        if postgres {
            Store::postgres().await
        } else {
            Store::sqlite()
        }
    }

    /// The URL the proxy's `store` setting and `Store::connect` take.
    pub fn url(&self) -> String {
        match self {
            Store::Sqlite(d) => format!("sqlite://{}", d.path().join("outbox.db").display()),
            Store::Postgres(db) => db.url.clone(),
        }
    }

    /// The outbox of a new connection to the store.
    pub async fn outbox(&self) -> Outbox {
        Outbox::connect(&self.url()).await.unwrap()
    }
}

/// A fresh PostgreSQL database for one test, dropped afterwards (best effort).
pub struct ScratchDb {
    pub url: String,
    name: String,
}

impl ScratchDb {
    pub async fn create() -> ScratchDb {
        let base = std::env::var("STRANGLER_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("strangler_t_{}", uuid_like());
        let admin = sqlx::PgPool::connect(&format!("{base}/postgres"))
            .await
            .expect("PostgreSQL at 127.0.0.1:5432");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        ScratchDb {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        // The same server the database was made on (`STRANGLER_TEST_POSTGRES`).
        let base = std::env::var("STRANGLER_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let _ = Command::new("psql")
            .args(["-d", &format!("{base}/postgres"), "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", t, std::process::id())
}
