//! A second, independent consumer of `shop-orders` (fan-out): order confirmations. It keeps its
//! own checkpoints under its own name, so it reads every event whatever the projector does.
//!
//! Sending is not something a transaction can take back, so the handler only writes the
//! notification into its outbox table (in the batch's transaction); a loop sends what is unsent
//! (here: a log line `Order confirmation`) and marks it sent. A crash between the two sends a
//! notification again at most, never loses one.
//!
//! `notifier --db sqlite://run/notifier.db --endpoint http://127.0.0.1:4567`

use std::time::Duration;

use clap::Parser as _;
use shop_consumers::{Args, order_id};
use sqlx::{AnyConnection, AnyPool};
use strangler_consumer::{Applying, Event, Handler};
use tracing::{info, warn};

struct Notifier;

impl Handler for Notifier {
    fn apply<'a>(&'a self, tx: &'a mut AnyConnection, event: &'a Event) -> Applying<'a> {
        Box::pin(async move {
            let kind = match event.ty.as_str() {
                "ORDER_CREATED" => "confirmed",
                "ORDER_CANCELLED" => "cancelled",
                _ => return Ok(()),
            };
            let d = &event.data;
            sqlx::query(
                "INSERT INTO notifications (event_id, order_id, user_id, kind, sent) VALUES ($1, $2, $3, $4, 0)",
            )
            .bind(&event.id)
            .bind(order_id(&d["order_id"]).unwrap_or(0))
            .bind(d["user_id"].as_str().unwrap_or(&event.partition_key))
            .bind(kind)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    }
}

/// Sends what the handler queued, oldest first.
async fn send(pool: AnyPool) {
    loop {
        let unsent: Result<Vec<(String, i64, String, String)>, _> = sqlx::query_as(
            "SELECT event_id, order_id, user_id, kind FROM notifications WHERE sent = 0 ORDER BY seq LIMIT 100",
        )
        .fetch_all(&pool)
        .await;
        match unsent {
            Ok(rows) => {
                for (event, order, user, kind) in &rows {
                    info!(order, user = %user, kind = %kind, event = %event, "Order confirmation");
                    if let Err(e) =
                        sqlx::query("UPDATE notifications SET sent = 1 WHERE event_id = $1")
                            .bind(event)
                            .execute(&pool)
                            .await
                    {
                        warn!(error = %e, "Cannot mark a notification sent");
                    }
                }
                if rows.is_empty() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            Err(e) => {
                warn!(error = %e, "Cannot read the notifications");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    shop_consumers::init_logging();
    let args = Args::parse();
    let pool = strangler_consumer::connect(&args.db).await?;
    let postgres = strangler_consumer::is_postgres(&pool);
    let seq = if postgres {
        "BIGSERIAL PRIMARY KEY"
    } else {
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS notifications (seq {seq}, event_id TEXT NOT NULL UNIQUE,
         order_id BIGINT NOT NULL, user_id TEXT NOT NULL, kind TEXT NOT NULL, sent BIGINT NOT NULL)"
    )))
    .execute(&pool)
    .await?;
    let sender = tokio::spawn(send(pool.clone()));
    let result = shop_consumers::run(&args, "order-notifier", pool, Notifier).await;
    sender.abort();
    result
}
