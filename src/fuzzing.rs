//! Proptest-driven fuzzing on stable Rust (test builds only): byte-level mutations of
//! valid inputs plus arbitrary bytes, fed to the parsers that read untrusted input. Every
//! `fuzz_*` test asserts that nothing panics and that what is accepted is sound. Runs
//! `FUZZ_CASES` cases per target (default 2 000, the CI run); a longer run:
//! `FUZZ_CASES=200000 cargo test --release --lib fuzz_`. Each test prints how many inputs
//! it executed.

use proptest::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// Cases per fuzz target.
pub fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    /// Copies a slice of the input elsewhere (duplicates keys, fields, lines).
    Splice(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Bytes that matter to the formats more often than others.
    let byte = prop_oneof![
        4 => prop::sample::select(b",\"\n\r{}[]:.-+eE%0123456789 \\\xef\xbb\xbf\x00\xff".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), any::<usize>(), 1usize..64).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
    ]
}

fn apply(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = data.len();
        match *e {
            Edit::Replace(i, b) if len > 0 => data[i % len] = b,
            Edit::Insert(i, b) => data.insert(i % (len + 1), b),
            Edit::Delete(i) if len > 0 => {
                data.remove(i % len);
            }
            Edit::Splice(from, to, n) if len > 0 => {
                let from = from % len;
                let piece = data[from..(from + n).min(len)].to_vec();
                let at = to % (len + 1);
                data.splice(at..at, piece);
            }
            _ => {}
        }
    }
    data
}

/// Mutations of one of `seeds` (1 to 8 edits), or arbitrary bytes now and then.
pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        9 => (prop::sample::select(seeds), prop::collection::vec(edit(), 1..8))
            .prop_map(|(seed, edits)| apply(seed, &edits)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// Runs one fuzz target for [`cases`] inputs and prints
/// `fuzz NAME: N executions, 0 crashes`; a failing input (a panic or a broken property)
/// fails the test with the shrunk input.
pub fn run<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let executions = AtomicU64::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&strategy, |value| {
        executions.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    let n = executions.load(Ordering::Relaxed);
    match result {
        Ok(()) => eprintln!("fuzz {name}: {n} executions, 0 crashes"),
        Err(e) => panic!("fuzz {name}: failed after {n} executions: {e}"),
    }
}
