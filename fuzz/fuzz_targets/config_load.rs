//! Feeds arbitrary bytes to the configuration loader: it must return a
//! configuration or a list of errors, never panic, overflow the stack or
//! run away with memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = tidepool_core::config::load(&text);
});
