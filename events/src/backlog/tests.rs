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

#[test]
fn a_batch_that_made_no_call_leaves_a_probing_stream_free_to_probe() {
    // The soak's stall: a batch held whole by the shard limiter counted a call that was never
    // made, and once the stream paused its probe never went out.
    let mut b = Backlog::new(64 << 20, &[], 0);
    b.add(vec![row(1, "s", "a"), row(2, "s", "b")]);
    let batch = send(b.next_batch(0, None));
    b.unsent("s", &batch.seqs);
    b.hold("s", 10);
    b.pause("s", 20);
    assert_eq!(b.calls("s"), 0);
    assert_eq!(seqs(&send(b.next_batch(20, None))), vec![1, 2]);
}

#[test]
fn unstick_frees_a_stream_whose_bookkeeping_went_wrong() {
    let mut b = Backlog::new(64 << 20, &[], 0);
    b.add(vec![row(1, "s", "a")]);
    send(b.next_batch(0, None)); // a call counted that will never come back
    b.pause("s", 10);
    assert!(idle(&b.next_batch(50, None)));
    let said = b.unstick("s", 50);
    assert!(said.contains("calls counted 1"), "{said}");
    assert_eq!(seqs(&send(b.next_batch(50, None))), vec![1]);
}

mod counters {
    //! Any sequence of the relay's moves leaves the backlog counting exactly the calls in flight,
    //! and a stream with rows and nothing in flight always sends once its waits are over.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// New rows: (stream, key) each.
        Add(Vec<(u8, u8)>),
        /// `next_batch`; a batch is either sent (a call in flight) or not (`unsent`).
        Next {
            send: bool,
        },
        /// The `i`-th call in flight comes back: published, rejected (retry later) or failed for
        /// the stream (released, the stream paused).
        Done {
            i: usize,
            outcome: u8,
        },
        Hold(u8, u16),
        Pause(u8, u16),
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec((0u8..2, 0u8..4), 1..6).prop_map(Op::Add),
            any::<bool>().prop_map(|send| Op::Next { send }),
            (any::<usize>(), 0u8..3).prop_map(|(i, outcome)| Op::Done { i, outcome }),
            (0u8..2, 1u16..200).prop_map(|(s, d)| Op::Hold(s, d)),
            (0u8..2, 1u16..200).prop_map(|(s, d)| Op::Pause(s, d)),
            (1u16..300).prop_map(Op::Advance),
        ]
    }

    const STREAMS: [&str; 2] = ["s", "t"];

    /// Settles a call as the relay does.
    fn done(b: &mut Backlog, batch: &Batch, outcome: u8, now: i64) {
        b.call_done(&batch.stream);
        match outcome {
            0 => {
                for &seq in &batch.seqs {
                    b.remove(&batch.stream, seq);
                }
                b.resume(&batch.stream);
            }
            1 => {
                for &seq in &batch.seqs {
                    b.retry_at(&batch.stream, seq, now + 50);
                }
                b.resume(&batch.stream);
            }
            _ => {
                b.release(&batch.stream, &batch.seqs);
                b.pause(&batch.stream, now + 100);
            }
        }
    }

    proptest! {
        #[test]
        fn calls_counted_are_the_calls_in_flight(ops in proptest::collection::vec(op(), 1..80)) {
            let mut b = Backlog::new(64 << 20, &[], 0);
            let mut now = 0i64;
            let mut seq = 0i64;
            let mut flying: Vec<Batch> = Vec::new();
            for op in ops {
                match op {
                    Op::Add(rows) => {
                        let rows = rows.into_iter().map(|(s, k)| {
                            seq += 1;
                            row(seq, STREAMS[s as usize], &format!("k{k}"))
                        });
                        b.add(rows.collect());
                    }
                    Op::Next { send } => {
                        if let Next::Send(batch) = b.next_batch(now, None) {
                            if send {
                                flying.push(batch);
                            } else {
                                b.unsent(&batch.stream, &batch.seqs);
                                b.hold(&batch.stream, now + 20);
                            }
                        }
                    }
                    Op::Done { i, outcome } => {
                        if !flying.is_empty() {
                            let batch = flying.remove(i % flying.len());
                            done(&mut b, &batch, outcome, now);
                        }
                    }
                    Op::Hold(s, d) => b.hold(STREAMS[s as usize], now + i64::from(d)),
                    Op::Pause(s, d) => b.pause(STREAMS[s as usize], now + i64::from(d)),
                    Op::Advance(d) => now += i64::from(d),
                }
                for s in STREAMS {
                    let in_flight = flying.iter().filter(|c| c.stream == s).count();
                    prop_assert_eq!(b.calls(s), in_flight, "stream {}", s);
                }
            }
            // Every call comes back, the waits run out: everything goes, call by call.
            for batch in std::mem::take(&mut flying) {
                done(&mut b, &batch, 0, now);
            }
            for _ in 0..10_000 {
                if b.is_empty() {
                    break;
                }
                now += 1_000;
                match b.next_batch(now, None) {
                    Next::Send(batch) => done(&mut b, &batch, 0, now),
                    Next::Wait(w) => prop_assert!(w.is_some(), "rows held, nothing in flight, nothing due ever"),
                }
            }
            prop_assert!(b.is_empty(), "the backlog never drained");
        }
    }
}
