//! The tests' fault-injecting shim as a process of its own, for the benchmarks: a Kinesis
//! endpoint in front of another (kinesalite, kinesis-local) answering every call `--delay-ms`
//! later, as a real Kinesis's round trip would.
//!
//! `kinesis-shim --target HOST:PORT [--delay-ms N]`: prints `http://127.0.0.1:PORT` (the port it
//! listens on) and serves until killed.

use std::sync::atomic::Ordering;

use strangler_tests::arg;
use strangler_tests::kinesis::Shim;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let target = arg("--target").expect("--target HOST:PORT").parse()?;
    let delay: u64 = arg("--delay-ms").map_or(Ok(0), |d| d.parse())?;
    let shim = Shim::start(target).await;
    shim.faults.delay_ms.store(delay, Ordering::Relaxed);
    println!("{}", shim.endpoint());
    std::future::pending::<()>().await;
    Ok(())
}
