//! A snapshot's manifest, read and checked against a job as a restore does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_fuzz as _; // its allocator

fuzz_target!(|bytes: &[u8]| sluice_runtime::fuzzing::snapshot_manifest(bytes));
