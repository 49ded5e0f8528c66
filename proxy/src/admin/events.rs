//! The events area: what waits in the outbox, the dead letters, and their re-drive.

use http::StatusCode;
use serde_json::json;

use super::{Admin, Reply, json_reply};

impl Admin {
    /// `GET /api/outbox`: events waiting and the oldest's age, per stream.
    pub(super) async fn outbox(&self) -> Reply {
        let depth = self.store.outbox().depth().await?;
        Ok(json_reply(StatusCode::OK, &json!({ "streams": depth })))
    }

    /// `GET /api/dead-letters`: the first 1,000 dead letters.
    pub(super) async fn dead_letters(&self) -> Reply {
        let dead = self.store.outbox().dead_letters(1000).await?;
        Ok(json_reply(StatusCode::OK, &json!({ "dead_letters": dead })))
    }

    /// `POST /api/dead-letters/redrive`: `?seq=1,2,3` re-drives those; no query re-drives them
    /// all.
    pub(super) async fn redrive(&self, query: Option<&str>) -> Reply {
        let seqs: Option<Vec<i64>> = query.and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("seq="))
                .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        });
        let n = self.store.outbox().redrive(seqs.as_deref()).await?;
        Ok(json_reply(StatusCode::OK, &json!({ "redriven": n })))
    }
}
