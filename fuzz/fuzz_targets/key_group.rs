//! One key group of keyed state in the canonical format, restored into a heap store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_fuzz as _; // its allocator

fuzz_target!(|bytes: &[u8]| sluice_runtime::fuzzing::key_group(bytes));
