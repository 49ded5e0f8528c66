//! Any bytes as a Kinesis record, the way a consumer reads one: taking an aggregate apart and
//! reading a CloudEvent never panic, and an aggregate that decodes encodes again to one that
//! decodes to the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strangler_wire::aggregate::{Builder, decode};

fuzz_target!(|data: &[u8]| {
    let _ = strangler_wire::envelope::read(data);
    if let Ok(Some(records)) = decode(data) {
        let mut b = Builder::default();
        for r in &records {
            let _ = strangler_wire::envelope::read(&r.data);
            b.push(&r.partition_key, &r.data);
        }
        let again = decode(&b.finish()).expect("a built aggregate decodes");
        let keys_and_data = |rs: &[strangler_wire::aggregate::UserRecord]| {
            rs.iter()
                .map(|r| (r.partition_key.clone(), r.data.clone()))
                .collect::<Vec<_>>()
        };
        let again = again.expect("a built aggregate is one");
        assert_eq!(keys_and_data(&again), keys_and_data(&records));
    }
});
