//! Defining and running a job with the API: bids per auction in sliding windows, from an
//! in-memory source, printed when the job ends.
//!
//!   cargo run --release -p sluice-runtime --example hot_items

use sluice_runtime::api::{Count, JobBuilder, Record, SlidingEventTime, WatermarkStrategy};
use sluice_runtime::connectors::{CollectSink, VecSource};
use sluice_runtime::exec::{start_embedded, RunOptions};
use sluice_runtime::time::EventTime;
use std::time::Duration;

fn main() -> Result<(), sluice_runtime::Error> {
    // (auction, time) bids in two splits, one bid every 10 ms.
    let split = |offset: i64| -> Vec<Record<(u64, i64)>> {
        (0..5_000)
            .map(|i| {
                let t = i * 20 + offset;
                Record::new(EventTime(t), ((t as u64 * 7) % 13, t))
            })
            .collect()
    };
    let job = JobBuilder::new("hot-items", 2, 128);
    let (sink, results) = CollectSink::new();
    job.source(
        "bids",
        VecSource::new(vec![split(0), split(10)]),
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(100)),
    )
    .key_by(|bid: &(u64, i64)| bid.0)
    .window(SlidingEventTime::of(
        Duration::from_secs(10),
        Duration::from_secs(2),
    ))
    .aggregate("bids-per-auction", Count, |auction, window, bids| {
        (window.end, *auction, bids)
    })
    .sink("results", sink);
    let summary = start_embedded(job.build()?, RunOptions::default())?.wait()?;

    let mut rows: Vec<(i64, u64, u64)> = results
        .lock()
        .map_err(|_| sluice_runtime::Error::Graph("results poisoned".into()))?
        .iter()
        .map(|r| r.value)
        .collect();
    rows.sort_unstable();
    for (window_end, auction, bids) in rows.iter().take(5) {
        println!("window ending {window_end}: auction {auction} had {bids} bids");
    }
    println!(
        "{} results from {} bids",
        rows.len(),
        summary.source_records()
    );
    Ok(())
}
