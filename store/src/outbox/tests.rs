use super::*;

fn event(n: u32) -> NewEvent {
    NewEvent {
        id: format!("id-{n}"),
        route: "orders".into(),
        stream: "orders".into(),
        partition_key: format!("k{n}"),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
    }
}

fn seqs(rows: Option<Vec<Pending>>) -> Option<Vec<i64>> {
    rows.map(|r| r.iter().map(|p| p.seq).collect())
}

#[tokio::test]
async fn caches_are_given_back_and_the_store_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
    let outbox = Outbox::connect(&url).await.unwrap();
    for n in 0..50 {
        outbox.enqueue(event(n)).await.unwrap();
    }
    assert_eq!(outbox.read_after(0, 100).await.unwrap().len(), 50);
    outbox.store().shrink().await.unwrap();
    outbox.enqueue(event(50)).await.unwrap();
    assert_eq!(outbox.read_after(0, 100).await.unwrap().len(), 51);
}

#[tokio::test]
async fn an_in_memory_store_is_refused() {
    let err = Outbox::connect("sqlite::memory:").await.err().unwrap();
    assert!(err.to_string().contains("in-memory outbox"), "{err}");
}

#[tokio::test]
async fn hands_committed_rows_over_and_sends_the_relay_to_the_store_on_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
    let outbox = Outbox::connect(&url).await.unwrap();
    // At start the store may hold rows from an earlier run: read it first.
    assert_eq!(seqs(outbox.handed_over(0)), None);
    outbox.enqueue(event(1)).await.unwrap();
    outbox.enqueue(event(2)).await.unwrap();
    let rows = outbox.handed_over(0).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[1].seq, rows[1].id.as_str()), (2, "id-2"));
    assert_eq!(rows[1].payload, br#"{"n":2}"#);
    // Nothing new: nothing to read either.
    assert_eq!(seqs(outbox.handed_over(2)), Some(vec![]));
    // A bulk load bypasses the writer: the store holds rows the hand-off does not.
    outbox.enqueue_batch(&[event(3)]).await.unwrap();
    outbox.enqueue(event(4)).await.unwrap();
    assert_eq!(seqs(outbox.handed_over(2)), None);
    // The relay read 3 and 4 from the store; the writer's next rows follow on.
    outbox.enqueue(event(5)).await.unwrap();
    assert_eq!(seqs(outbox.handed_over(4)), Some(vec![5]));
    // A relay behind the hand-off (it started over) reads the store.
    outbox.enqueue(event(6)).await.unwrap();
    assert_eq!(seqs(outbox.handed_over(0)), None);
    // Rows it already has are skipped.
    outbox.enqueue(event(7)).await.unwrap();
    outbox.enqueue(event(8)).await.unwrap();
    assert_eq!(seqs(outbox.handed_over(7)), Some(vec![8]));
    // What the store holds agrees with the hand-off.
    let stored = outbox.read_after(4, 10).await.unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|p| (p.seq, p.id.as_str()))
            .collect::<Vec<_>>(),
        [(5, "id-5"), (6, "id-6"), (7, "id-7"), (8, "id-8")]
    );
}
