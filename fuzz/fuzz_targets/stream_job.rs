//! A StreamJob manifest as `sluice run job.yaml` reads it: parsed, then validated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_fuzz as _; // its allocator

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(manifest) = sluice_crds::parse_manifest(&text, "fuzz.yaml") {
        let _ = sluice_crds::validate_update(&manifest.spec, &manifest.spec);
    }
});
