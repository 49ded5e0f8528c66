//! The orders read model of the shop's new orders service, built from the events on
//! `shop-orders`: every order placed through strangler (on the monolith or on the new service)
//! and every cancellation. It writes the service's own `orders` table, which the service answers
//! `GET /api/orders/{id}` and `GET /api/orders` from.
//!
//! `projector --db sqlite://run/orders.db --endpoint http://127.0.0.1:4567`
//!
//! Each change is idempotent in itself as well: an order the service already has (it placed it,
//! or the history import did) is kept as it is; a cancellation sets the status.

use clap::Parser as _;
use serde_json::Value;
use shop_consumers::{Args, order_id};
use sqlx::AnyConnection;
use strangler_consumer::{Applying, Event, Handler};
use tracing::debug;

struct Projector;

impl Handler for Projector {
    fn apply<'a>(&'a self, tx: &'a mut AnyConnection, event: &'a Event) -> Applying<'a> {
        Box::pin(async move {
            let d = &event.data;
            let Some(id) = order_id(&d["order_id"]) else {
                debug!(event = %event.id, "An event without an order id; nothing to project");
                return Ok(());
            };
            match event.ty.as_str() {
                "ORDER_CREATED" => {
                    let user = d["user_id"].as_str().unwrap_or("anonymous");
                    let items = serde_json::to_string(d.get("items").unwrap_or(&Value::Null))?;
                    let total = d["total_cents"].as_i64().unwrap_or(0);
                    // The service's time format: 2026-11-30T10:00:00Z.
                    let at = format!("{}Z", event.time.get(..19).unwrap_or(&event.time));
                    sqlx::query(
                        "INSERT INTO orders (id, user_id, items, total_cents, status, created_at)
                         VALUES ($1, $2, $3, $4, 'placed', $5) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(id)
                    .bind(user)
                    .bind(items)
                    .bind(total)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
                "ORDER_CANCELLED" => {
                    sqlx::query("UPDATE orders SET status = 'cancelled' WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                _ => {}
            }
            Ok(())
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    shop_consumers::init_logging();
    let args = Args::parse();
    let pool = strangler_consumer::connect(&args.db).await?;
    // The service's table (the same DDL as orders_service.py on SQLite).
    let postgres = strangler_consumer::is_postgres(&pool);
    let id = if postgres { "BIGINT" } else { "INTEGER" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS orders (id {id} PRIMARY KEY, user_id TEXT NOT NULL,
         items TEXT NOT NULL, total_cents BIGINT NOT NULL, status TEXT NOT NULL,
         created_at TEXT NOT NULL)"
    )))
    .execute(&pool)
    .await?;
    shop_consumers::run(&args, "orders-projector", pool, Projector).await
}
