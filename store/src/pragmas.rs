//! SQLite settings shared by every connection to the store (the pools and the group writer's).

/// `journal_size_limit`: a WAL grown by a backlog is cut back after checkpoints.
pub(crate) const JOURNAL_SIZE_LIMIT: i64 = 64 << 20;

/// `cache_size` for `bytes` of page cache (`-N` is N KiB; at least 64 KiB).
pub(crate) fn cache_size(bytes: usize) -> String {
    format!("-{}", (bytes / 1024).max(64))
}
