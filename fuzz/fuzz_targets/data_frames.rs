//! A data connection's frames, read as a worker's inbound reader reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_fuzz as _; // its allocator

fuzz_target!(|bytes: &[u8]| sluice_runtime::fuzzing::data_frames(bytes));
