use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn lease(shard: &str, owner: Option<&str>, counter: i64) -> Lease {
    Lease {
        shard: shard.into(),
        owner: owner.map(str::to_string),
        counter,
    }
}

#[test]
fn a_lease_expires_when_its_counter_stands_still_for_the_failover_time() {
    let mut e = Expiry::new(10_000);
    let held = lease("s1", Some("a"), 1);
    assert!(e.live(&held, 0));
    assert!(e.live(&held, 9_999));
    assert!(!e.live(&held, 10_000), "no renewal for the failover time");
    // A renewal seen later makes it live again, from when it was seen.
    let renewed = lease("s1", Some("a"), 2);
    assert!(e.live(&renewed, 10_500));
    assert!(e.live(&renewed, 20_499));
    assert!(!e.live(&renewed, 20_500));
    // A released lease is free at once.
    assert!(!e.live(&lease("s2", None, 7), 0));
    e.retain(["s1"]);
    assert_eq!(e.seen.len(), 1);
}

#[test]
fn one_instance_takes_every_ready_shard_and_no_child_before_its_parents() {
    // s3 is a child still waiting for its parent: not in `ready`.
    let p = plan("a", &["s1", "s2"], &[]);
    let mut take = p.take.clone();
    take.sort();
    assert_eq!(take, ["s1", "s2"]);
    assert_eq!(p.steal, None);
}

#[test]
fn a_dead_instances_leases_are_taken_and_a_newcomer_steals_its_share() {
    let leases = vec![
        (lease("s1", Some("a"), 4), true),
        (lease("s2", Some("a"), 4), true),
        (lease("s3", Some("b"), 9), false), // b stopped renewing
        (lease("s4", Some("b"), 9), false),
    ];
    let ready = ["s1", "s2", "s3", "s4"];
    // c joins: a and c share four shards, two each; the expired ones come first.
    let p = plan("c", &ready, &leases);
    let mut take = p.take.clone();
    take.sort();
    assert_eq!(take, ["s3", "s4"]);
    // Alone among the live, a would have taken them too; once c holds them, a holds its share.
    assert_eq!(plan("a", &ready, &leases).take.len(), 2);
    let mut after = leases.clone();
    for (l, live) in &mut after[2..] {
        *l = lease(&l.shard, Some("c"), 1);
        *live = true;
    }
    assert_eq!(plan("a", &ready, &after), Plan::default());
    assert_eq!(plan("c", &ready, &after), Plan::default());
    // With nothing free, a newcomer steals one lease from the busiest, one per round.
    let all_a: Vec<(Lease, bool)> = ready
        .iter()
        .map(|s| (lease(s, Some("a"), 1), true))
        .collect();
    let p = plan("d", &ready, &all_a);
    assert!(p.take.is_empty());
    assert!(p.steal.is_some());
    // One apart is balanced: no stealing back and forth.
    let three_two: Vec<(Lease, bool)> = ["s1", "s2", "s3", "s4", "s5"]
        .iter()
        .enumerate()
        .map(|(i, s)| (lease(s, Some(if i < 3 { "a" } else { "b" }), 1), true))
        .collect();
    let ready5 = ["s1", "s2", "s3", "s4", "s5"];
    assert_eq!(plan("b", &ready5, &three_two), Plan::default());
}

/// The lease table as the simulation keeps it: shard → owner.
type Table = BTreeMap<String, Option<String>>;

/// One round: each instance in `order` plans on the table as it is and applies its plan at once
/// (the table's conditional writes, here in sequence). Whether anything changed.
fn round(table: &mut Table, alive: &[String], order: &[usize]) -> bool {
    let mut changed = false;
    for &i in order {
        let me = &alive[i % alive.len()];
        let leases: Vec<(Lease, bool)> = table
            .iter()
            .map(|(s, o)| {
                let live = o.as_ref().is_some_and(|o| alive.contains(o));
                (lease(s, o.as_deref(), 0), live)
            })
            .collect();
        let ready: Vec<&str> = table.keys().map(String::as_str).collect();
        let p = plan(me, &ready, &leases);
        for s in p.take.iter().chain(p.steal.iter()) {
            table.insert(s.clone(), Some(me.clone()));
            changed = true;
        }
    }
    changed
}

fn holdings(table: &Table, alive: &[String]) -> Vec<usize> {
    alive
        .iter()
        .map(|a| table.values().filter(|o| o.as_ref() == Some(a)).count())
        .collect()
}

proptest! {
    /// Whatever the number of instances and shards and the order they act in: within a bounded
    /// number of rounds every shard has one live owner, holdings differ by at most one, and
    /// nothing moves after that. Then one instance dies (kill -9: its leases stop being
    /// renewed), and the survivors get there again.
    #[test]
    fn instances_converge_to_a_fair_stable_share(
        instances in 1usize..6,
        shards in 1usize..13,
        orders in proptest::collection::vec(proptest::collection::vec(0usize..6, 1..8), 40),
        victim in 0usize..6,
    ) {
        let mut alive: Vec<String> = (0..instances).map(|i| format!("i{i}")).collect();
        let mut table: Table = (0..shards).map(|s| (format!("shard-{s:03}"), None)).collect();
        for phase in 0..2 {
            // Every instance acts at least once a round, after the round's own order.
            let mut settled = false;
            for order in &orders {
                let mut order = order.clone();
                order.extend(0..alive.len());
                if !round(&mut table, &alive, &order) {
                    settled = true;
                    break;
                }
            }
            prop_assert!(settled, "phase {phase}: still moving after {} rounds", orders.len());
            prop_assert!(table.values().all(|o| o.as_ref().is_some_and(|o| alive.contains(o))));
            let h = holdings(&table, &alive);
            let (min, max) = (h.iter().min().unwrap(), h.iter().max().unwrap());
            prop_assert!(max - min <= 1, "phase {phase}: holdings {h:?}");
            if alive.len() == 1 {
                break;
            }
            alive.remove(victim % alive.len());
        }
    }
}
