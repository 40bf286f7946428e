//! What placement costs per chunk and per partition lookup: `slice_homes`
//! (4+2, six slices) and `partition_replicas` over members of one zone and
//! equal capacity, over three zones, and over mixed capacities, for 7 and
//! 100 nodes, and `handoff_order` for one slice. Run:
//! `cargo bench -p ouroboros-core --bench placement`. Prints markdown for
//! docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Instant;

use ouroboros_core::placement::{self, Member};
use ouroboros_core::Hash;

/// `size` members: alike, in three zones, or with capacities 1, 2 and 4.
fn members(size: usize, kind: &str) -> Vec<Member> // A
{
    (0..size)
        .map(|i| {
            let node = Hash::of(&(i as u64).to_le_bytes());
            match kind {
                "three zones" => Member { node, zone: (i % 3) as u64, weight: 1 },
                "mixed capacities" => Member { node, zone: 0, weight: [1, 2, 4][i % 3] },
                _ => Member { node, zone: 0, weight: 1 },
            }
        })
        .collect()
}

/// Nanoseconds per call of `work`, over enough calls to take about 200 ms.
fn per_call(mut work: impl FnMut(u32)) -> f64 // A
{
    let mut calls = 1u32;
    loop {
        let started = Instant::now();
        for i in 0..calls {
            work(i);
        }
        let took = started.elapsed();
        if took.as_millis() >= 200 {
            return took.as_nanos() as f64 / f64::from(calls);
        }
        calls = calls.saturating_mul(4);
    }
}

fn main() // A
{
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("| members | kind | slice_homes (6) | partition_replicas | handoff_order |\n|---|---|---|---|---|");
    for size in [7, 100] {
        for kind in ["alike", "three zones", "mixed capacities"] {
            let members = members(size, kind);
            let homes = per_call(|i| {
                black_box(placement::slice_homes(&Hash::of(&i.to_le_bytes()), 6, black_box(&members)));
            });
            let replicas = per_call(|i| {
                black_box(placement::partition_replicas(i as u8, black_box(&members)));
            });
            let chunk_homes = placement::slice_homes(&Hash::of(b"chunk"), 6, &members);
            let handoff = per_call(|i| {
                black_box(placement::handoff_order(i as usize % 6, &chunk_homes, black_box(&members), |_| false));
            });
            println!(
                "| {size} | {kind} | {:.1} µs | {:.1} µs | {:.1} µs |",
                homes / 1000.0,
                replicas / 1000.0,
                handoff / 1000.0
            );
        }
    }
}
