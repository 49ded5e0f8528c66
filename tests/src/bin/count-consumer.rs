//! A consumer for the tests (strangler-consumer with a handler that is not idempotent): each
//! event it is handed becomes one more row in `applied`, so an event applied twice shows as two
//! rows and a lost one as none; `seq` keeps the order they were applied in.
//!
//! `count-consumer --db URL --stream S --endpoint E [--fan-out] [--instance NAME]
//! [--failover MS] [--shard-sync MS]` (failover default 2000 ms: a killed instance's shards move
//! within the tests' waits);
//! it stops on SIGTERM.

use std::time::Duration;

use sqlx::AnyConnection;
use strangler_consumer::{Applying, Config, Consumer, Event, Handler};
use strangler_tests::arg;

struct Count;

impl Handler for Count {
    fn apply<'a>(&'a self, tx: &'a mut AnyConnection, event: &'a Event) -> Applying<'a> {
        Box::pin(async move {
            sqlx::query("INSERT INTO applied (event_id, partition_key, shard_id, body) VALUES ($1, $2, $3, $4)")
                .bind(&event.id)
                .bind(&event.partition_key)
                .bind(&event.shard_id)
                .bind(event.data.to_string())
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let db = arg("--db").expect("--db");
    let pool = strangler_consumer::connect(&db).await?;
    let postgres = strangler_consumer::is_postgres(&pool);
    let seq = if postgres {
        "BIGSERIAL PRIMARY KEY"
    } else {
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    };
    // Instances starting together would race on PostgreSQL's catalog ("relation already
    // exists" despite IF NOT EXISTS): one at a time, under an advisory lock.
    let mut tx = pool.begin().await?;
    if postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7363021459815133800)")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS applied (seq {seq}, event_id TEXT NOT NULL,
         partition_key TEXT NOT NULL, shard_id TEXT NOT NULL, body TEXT NOT NULL)"
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let client =
        strangler_events::kinesis::client(Some("us-east-1"), arg("--endpoint").as_deref()).await;
    let mut config = Config::new(arg("--stream").expect("--stream"), "count");
    config.idle_wait = Duration::from_millis(200);
    config.shard_sync = Duration::from_millis(500);
    config.enhanced_fan_out = std::env::args().any(|a| a == "--fan-out");
    if let Some(b) = arg("--batch") {
        config.batch = b.parse()?;
    }
    if let Some(name) = arg("--instance") {
        config.instance = name;
    }
    config.failover = Duration::from_millis(arg("--failover").map_or(Ok(2000), |v| v.parse())?);
    if let Some(ms) = arg("--shard-sync") {
        config.shard_sync = Duration::from_millis(ms.parse()?);
    }
    let consumer = Consumer::new(client, pool, config).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        term.recv().await;
        let _ = stop.send(true);
    });
    consumer.run(Count, stopped).await?;
    Ok(())
}
