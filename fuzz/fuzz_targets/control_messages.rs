//! The coordinator's and the workers' length-prefixed messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_fuzz as _; // its allocator

fuzz_target!(|bytes: &[u8]| sluice_runtime::fuzzing::control_messages(bytes));
