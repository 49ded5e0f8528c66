//! Resharding order: a child shard (after a split or a merge) is read only once every parent it
//! has is read to its end, so the events of one partition key are applied in the order they were
//! written. Pure code: the shard listing and the finished set in, the shards to start out.

use std::collections::HashSet;

/// A shard as `ListShards` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub id: String,
    pub parent: Option<String>,
    /// A merge's second parent.
    pub adjacent_parent: Option<String>,
    /// The hash keys it holds (first, last).
    pub hash_range: Option<(u128, u128)>,
}

impl Shard {
    fn parents(&self) -> impl Iterator<Item = &str> {
        self.parent
            .iter()
            .chain(self.adjacent_parent.iter())
            .map(String::as_str)
    }
}

/// The shards that may be read now: not finished, and each parent finished or no longer listed
/// (trimmed out of the stream's retention: nothing is left in it to read first).
pub fn ready<'a>(shards: &'a [Shard], finished: &HashSet<String>) -> Vec<&'a Shard> {
    let listed: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    shards
        .iter()
        .filter(|s| !finished.contains(&s.id))
        .filter(|s| {
            s.parents()
                .all(|p| finished.contains(p) || !listed.contains(p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>) -> Shard {
        Shard {
            id: id.into(),
            parent: parent.map(Into::into),
            adjacent_parent: adjacent.map(Into::into),
            hash_range: None,
        }
    }

    fn ids(v: Vec<&Shard>) -> Vec<&str> {
        v.into_iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn children_wait_for_their_parents() {
        let shards = [
            shard("0", None, None),
            shard("1", None, None),
            shard("2", Some("0"), None), // split of 0
            shard("3", Some("0"), None),
            shard("4", Some("1"), Some("2")), // merge of 1 and 2
        ];
        let mut done = HashSet::new();
        assert_eq!(ids(ready(&shards, &done)), ["0", "1"]);
        done.insert("0".to_string());
        assert_eq!(ids(ready(&shards, &done)), ["1", "2", "3"]);
        done.insert("2".to_string());
        assert_eq!(ids(ready(&shards, &done)), ["1", "3"]);
        done.insert("1".to_string());
        assert_eq!(ids(ready(&shards, &done)), ["3", "4"]);
    }

    #[test]
    fn a_parent_gone_from_the_listing_does_not_hold_its_children() {
        let shards = [
            shard("2", Some("0"), None),
            shard("4", Some("1"), Some("2")),
        ];
        assert_eq!(ids(ready(&shards, &HashSet::new())), ["2"]);
    }

    /// A random resharding history: start with `n` shards, then split or merge open ones.
    fn history() -> impl Strategy<Value = Vec<Shard>> {
        (
            1usize..4,
            prop::collection::vec((any::<bool>(), any::<u8>()), 0..12),
        )
            .prop_map(|(n, ops)| {
                let mut shards: Vec<Shard> =
                    (0..n).map(|i| shard(&i.to_string(), None, None)).collect();
                let mut open: Vec<String> = shards.iter().map(|s| s.id.clone()).collect();
                for (split, pick) in ops {
                    let i = pick as usize % open.len();
                    let next = |s: &Vec<Shard>| s.len().to_string();
                    if split || open.len() < 2 {
                        let p = open.remove(i);
                        for _ in 0..2 {
                            let id = next(&shards);
                            shards.push(shard(&id, Some(&p), None));
                            open.push(id);
                        }
                    } else {
                        let a = open.remove(i);
                        let b = open.remove(i % open.len());
                        let id = next(&shards);
                        shards.push(shard(&id, Some(&a), Some(&b)));
                        open.push(id);
                    }
                }
                shards
            })
    }

    proptest! {
        /// Reading whatever is ready, one shard at a time in any order, reads every shard once
        /// and every parent before its children.
        #[test]
        fn every_shard_once_parents_first(shards in history(), picks in prop::collection::vec(any::<u8>(), 64)) {
            let mut done = HashSet::new();
            let mut order = Vec::new();
            for pick in picks.iter().cycle().take(shards.len()) {
                let now = ready(&shards, &done);
                prop_assert!(!now.is_empty(), "stuck with {} of {} read", done.len(), shards.len());
                let s = now[*pick as usize % now.len()];
                for p in s.parents() {
                    prop_assert!(done.contains(p), "{} before its parent {p}", s.id);
                }
                order.push(s.id.clone());
                done.insert(s.id.clone());
            }
            prop_assert_eq!(order.len(), shards.len());
            prop_assert!(ready(&shards, &done).is_empty());
        }
    }
}
