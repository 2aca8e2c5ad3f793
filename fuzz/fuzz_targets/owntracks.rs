#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| waymark::fuzzing::owntracks(data));
