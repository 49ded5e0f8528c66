//! The outbox's writes through the store's group writer ([`crate::writer`]): what a caller asks
//! for ([`Write`]), split per group into its parts ([`Group`]), and committed by the database's
//! side ([`sqlite`], [`postgres`]).

pub(crate) mod postgres;
pub(crate) mod sqlite;

use super::NewEvent;

/// What one caller waits for the writer to commit.
pub(crate) enum Write {
    /// Store an event.
    Enqueue(NewEvent),
    /// Remove published events (archive them with `keep`).
    Published(Vec<i64>, bool),
    /// Record a failed try of events.
    Retry(Retry),
    /// Give back the writer connection's page cache (after a backlog has drained).
    Shrink,
}

/// A failed try of events: not tried again before `next_ms`.
pub(crate) struct Retry {
    pub(crate) seqs: Vec<i64>,
    pub(crate) next_ms: i64,
    pub(crate) error: String,
}

/// One group commit's work, split from the writes taken.
#[derive(Default)]
pub(crate) struct Group {
    pub(crate) events: Vec<NewEvent>,
    pub(crate) published: Vec<(Vec<i64>, bool)>,
    pub(crate) retries: Vec<Retry>,
    /// Give back the page cache after the commit.
    pub(crate) shrink: bool,
}

impl Group {
    pub(crate) fn split(writes: Vec<Write>) -> Group {
        let mut g = Group {
            events: Vec::with_capacity(writes.len()),
            ..Group::default()
        };
        for w in writes {
            match w {
                Write::Enqueue(ev) => g.events.push(ev),
                Write::Published(seqs, keep) => g.published.push((seqs, keep)),
                Write::Retry(retry) => g.retries.push(retry),
                Write::Shrink => g.shrink = true,
            }
        }
        g
    }
}
