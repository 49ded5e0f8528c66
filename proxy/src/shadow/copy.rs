//! Sending one copy and reading its whole answer with the target's timeouts (each read within
//! its `read_timeout`, the whole exchange within its connection set-up time plus one
//! `read_timeout`) and the route's body limit.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;

use super::Captured;
use crate::upstream::UpstreamPeer;

/// What became of a copy.
#[derive(Debug)]
pub enum Copied {
    /// The whole answer, and how long it took.
    Answer(Captured, Duration),
    /// No whole answer in time.
    Timeout,
    /// The connection or the exchange failed.
    Error(String),
    /// The answer's body went past the limit.
    TooLarge,
}

pub(super) async fn send(
    connector: &Connector,
    to: &UpstreamPeer,
    mut req: RequestHeader,
    body: Bytes,
    limit: usize,
) -> Copied {
    let started = Instant::now();
    // The whole body is in hand: it goes with a length, whatever framing the client used.
    let framed = req.headers.contains_key(http::header::CONTENT_LENGTH)
        || req.headers.contains_key(http::header::TRANSFER_ENCODING);
    req.remove_header(&http::header::TRANSFER_ENCODING);
    if (framed || !body.is_empty())
        && let Err(e) = req.insert_header(http::header::CONTENT_LENGTH, body.len())
    {
        return Copied::Error(e.to_string());
    }
    // Boxed: pingora's session futures are kilobytes, and the timeout would move them.
    let exchange = Box::pin(async {
        let (mut client, _reused) = connector.get_http_session(&to.peer).await?;
        client.write_request_header(Box::new(req)).await?;
        if !body.is_empty() {
            client.write_request_body(body, false).await?;
        }
        client.finish_request_body().await?;
        client.read_response_header().await?;
        let header = client
            .response_header()
            .map(|h| (h.status.as_u16(), h.headers.clone()))
            .unwrap_or_default();
        let mut answer = Vec::new();
        while let Some(chunk) = client.read_response_body().await? {
            if answer.len() + chunk.len() > limit {
                return Ok(None);
            }
            answer.extend_from_slice(&chunk);
        }
        connector
            .release_http_session(client, &to.peer, Some(to.cfg.idle_timeout))
            .await;
        Ok::<_, Box<pingora::Error>>(Some(Captured {
            status: header.0,
            headers: header.1,
            body: answer,
        }))
    });
    let bound = to.cfg.total_timeout + to.cfg.read_timeout;
    match tokio::time::timeout(bound, exchange).await {
        Ok(Ok(Some(answer))) => Copied::Answer(answer, started.elapsed()),
        Ok(Ok(None)) => Copied::TooLarge,
        Ok(Err(e)) => Copied::Error(e.to_string()),
        Err(_) => Copied::Timeout,
    }
}
