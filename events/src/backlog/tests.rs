use super::*;

fn row(seq: i64, stream: &str, key: &str) -> Pending {
    Pending {
        seq,
        id: format!("id-{seq}"),
        stream: stream.into(),
        partition_key: key.into(),
        payload: vec![b'x'; 10],
        attempts: 0,
        created_ms: 0,
        next_attempt_ms: 0,
    }
}

fn send(n: Next) -> Batch {
    match n {
        Next::Send(b) => b,
        Next::Wait(w) => panic!("nothing to send (wait {w:?})"),
    }
}

fn idle(n: &Next) -> bool {
    matches!(n, Next::Wait(_))
}

fn seqs(b: &Batch) -> Vec<i64> {
    b.seqs.clone()
}

#[test]
fn one_row_per_key_per_call_and_held_behind_in_flight() {
    let mut b = Backlog::new(64 << 20, &[], 0);
    b.add(vec![row(1, "s", "a"), row(2, "s", "a"), row(3, "s", "b")]);
    let first = send(b.next_batch(0, None));
    assert_eq!(seqs(&first), vec![1, 3]);
    // 2 waits for 1, which is in flight.
    assert!(idle(&b.next_batch(0, None)));
    b.remove("s", 1);
    assert_eq!(seqs(&send(b.next_batch(0, None))), vec![2]);
}

#[test]
fn a_retry_holds_its_key_until_due() {
    let mut b = Backlog::new(64 << 20, &[], 0);
    b.add(vec![row(1, "s", "a"), row(2, "s", "a"), row(3, "s", "b")]);
    send(b.next_batch(0, None));
    b.retry_at("s", 1, 100);
    b.remove("s", 3);
    assert!(
        matches!(b.next_batch(50, None), Next::Wait(Some(d)) if d == Duration::from_millis(50)),
        "2 overtook 1, or the wait is not the retry's"
    );
    assert_eq!(seqs(&send(b.next_batch(100, None))), vec![1]);
    assert_eq!(b.get("s", 1).unwrap().attempts, 1);
}

#[test]
fn a_queue_waiting_for_retries_rests_until_due_or_changed() {
    let mut b = Backlog::new(64 << 20, &[], 0);
    b.add(vec![row(1, "s", "a")]);
    send(b.next_batch(0, None));
    b.retry_at("s", 1, 100);
    assert!(
        matches!(b.next_batch(10, None), Next::Wait(Some(d)) if d == Duration::from_millis(90))
    );
    // Resting: still the same wait, without a walk of the queue.
    assert!(
        matches!(b.next_batch(60, None), Next::Wait(Some(d)) if d == Duration::from_millis(40))
    );
    // A new row wakes it up.
    b.add(vec![row(2, "s", "b")]);
    assert_eq!(seqs(&send(b.next_batch(60, None))), vec![2]);
    assert_eq!(seqs(&send(b.next_batch(100, None))), vec![1]);
}

#[test]
fn linger_holds_small_batches_but_not_full_ones() {
    let mut b = Backlog::new(64 << 20, &[], 0);
    let now = Instant::now();
    let linger = Some((now, Duration::from_millis(20)));
    b.add(vec![row(1, "s", "a")]);
    send(b.next_batch(0, linger)); // the first call goes at once
    b.add(vec![row(2, "s", "b")]);
    assert!(
        matches!(b.next_batch(0, linger), Next::Wait(Some(d)) if d == Duration::from_millis(20)),
        "small batch within linger"
    );
    let later = Some((now + Duration::from_millis(25), Duration::from_millis(20)));
    send(b.next_batch(0, later));
    b.add(
        (3..3 + MAX_RECORDS as i64)
            .map(|i| row(i, "s", &format!("k{i}")))
            .collect(),
    );
    assert_eq!(send(b.next_batch(0, later)).seqs.len(), MAX_RECORDS);
}

#[test]
fn a_full_queue_lags_and_catches_up_in_order() {
    let mut b = Backlog::new(64 << 20, &[], 0);
    let rows: Vec<_> = (1..=QUEUE_ROWS as i64 + 10)
        .map(|i| Pending {
            created_ms: i,
            ..row(i, "s", "hot")
        })
        .collect();
    b.add(rows);
    b.add(vec![row(QUEUE_ROWS as i64 + 11, "t", "x")]);
    assert_eq!(b.cursor, QUEUE_ROWS as i64 + 11);
    assert_eq!(b.rows_held(), QUEUE_ROWS + 1, "other streams keep flowing");
    assert_eq!(
        b.depths(),
        vec![("s", QUEUE_ROWS + 10, Some(1)), ("t", 1, Some(0))],
        "rows left in the store count"
    );
    assert!(b.lagging().is_empty(), "no room yet");
    for seq in 1..=QUEUE_ROWS as i64 / 2 + 1 {
        b.remove("s", seq);
    }
    let lag = b.lagging();
    assert_eq!(lag, vec![("s".to_string(), QUEUE_ROWS as i64 + 1)]);
    let back: Vec<_> = (QUEUE_ROWS as i64 + 1..=QUEUE_ROWS as i64 + 5)
        .map(|i| row(i, "s", "hot"))
        .collect();
    b.catch_up("s", back, false);
    let depth = QUEUE_ROWS / 2 - 1 + 10;
    assert_eq!(
        b.depths()[0].1,
        depth,
        "read back: held now, not counted twice"
    );
    let back: Vec<_> = (QUEUE_ROWS as i64 + 6..=QUEUE_ROWS as i64 + 10)
        .map(|i| row(i, "s", "hot"))
        .collect();
    b.catch_up("s", back, true);
    assert!(b.lagging().is_empty());
    assert_eq!(b.rows_held(), QUEUE_ROWS / 2 - 1 + 10 + 1);
    assert_eq!(b.depths()[0].1, depth);
    for seq in QUEUE_ROWS as i64 / 2 + 2..=QUEUE_ROWS as i64 + 10 {
        b.remove("s", seq);
    }
    assert_eq!(
        b.depths()[0],
        ("s", 0, None),
        "a drained stream stays listed"
    );
}

#[test]
fn an_aggregated_stream_sends_a_keys_rows_together_in_order() {
    let mut b = Backlog::new(64 << 20, &["s".to_string()], 1 << 20);
    b.add(vec![
        row(1, "s", "a"),
        row(2, "s", "a"),
        row(3, "s", "b"),
        row(4, "s", "a"),
    ]);
    assert_eq!(seqs(&send(b.next_batch(0, None))), vec![1, 2, 3, 4]);
    b.add(vec![row(5, "s", "a"), row(6, "s", "c")]);
    // 5 waits for a's rows in flight; c goes.
    assert_eq!(seqs(&send(b.next_batch(0, None))), vec![6]);
    // Rows a call left out (`release`) keep their key's order behind the rows it carried.
    b.release("s", &[4]);
    assert!(idle(&b.next_batch(0, None)), "4 overtook 1 and 2");
    for seq in [1, 2] {
        b.remove("s", seq);
    }
    assert_eq!(seqs(&send(b.next_batch(0, None))), vec![4, 5]);
}

#[test]
fn a_call_takes_one_aggregates_worth_of_a_key() {
    // Rows of 11 bytes (payload and key), 25 bytes of a key per call: a key stops taking rows
    // once it reaches that, and its fourth row waits for the next call.
    let mut b = Backlog::new(64 << 20, &["s".to_string()], 25);
    b.add((1..=4).map(|i| row(i, "s", "a")).collect());
    b.add(vec![row(5, "s", "b")]);
    assert_eq!(seqs(&send(b.next_batch(0, None))), vec![1, 2, 3, 5]);
}

#[test]
fn a_paused_stream_waits_then_probes_one_call_at_a_time() {
    let mut b = Backlog::new(64 << 20, &[], 0);
    b.add(vec![row(1, "s", "a"), row(2, "s", "b"), row(3, "t", "a")]);
    let first = send(b.next_batch(0, None));
    assert_eq!(first.stream, "s");
    b.call_done("s");
    b.release("s", &[1, 2]);
    b.pause("s", 100);
    // Only t goes; s says when it may.
    assert_eq!(send(b.next_batch(10, None)).stream, "t");
    assert!(
        matches!(b.next_batch(10, None), Next::Wait(Some(d)) if d == Duration::from_millis(90))
    );
    // The probe: one call, and no second one while it is out.
    b.add(vec![row(4, "s", "c")]);
    assert_eq!(seqs(&send(b.next_batch(100, None))), vec![1, 2, 4]);
    b.add(vec![row(5, "s", "d")]);
    assert!(idle(&b.next_batch(100, None)));
    // It got through: full pace again.
    b.call_done("s");
    b.resume("s");
    assert_eq!(seqs(&send(b.next_batch(100, None))), vec![5]);
}

#[test]
fn the_budget_bounds_what_all_streams_hold_without_starving_one() {
    let budget = 64 * 1024;
    let mut b = Backlog::new(budget, &[], 0);
    let big = |seq, stream: &str| Pending {
        payload: vec![b'x'; 1000],
        ..row(seq, stream, &format!("k{seq}"))
    };
    b.add((1..=200).map(|i| big(i, "s")).collect());
    assert!(b.bytes_held() <= budget / 2 + 2000, "{}", b.bytes_held());
    b.add((201..=400).map(|i| big(i, "t")).collect());
    assert!(b.bytes_held() <= budget + 2000, "{}", b.bytes_held());
    // A third stream still gets its sixteenth.
    let before = b.rows_held();
    b.add((401..=420).map(|i| big(i, "u")).collect());
    assert!(b.rows_held() > before, "u starved");
    assert!(b.bytes_held() <= budget + budget / 16 + 2000);
    assert_eq!(b.depths()[2].1, 20, "rows left in the store still count");
}

#[test]
fn streams_take_turns() {
    let mut b = Backlog::new(64 << 20, &[], 0);
    b.add(vec![row(1, "s", "a"), row(2, "t", "a")]);
    let x = send(b.next_batch(0, None)).stream;
    let y = send(b.next_batch(0, None)).stream;
    assert_ne!(x, y);
}
