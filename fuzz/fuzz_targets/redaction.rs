//! Redaction never breaks the JSON of a line (what tests/redact_properties.rs checks on
//! generated lines, here on whatever the fuzzer finds), and never panics on any UTF-8.
#![no_main]

use std::borrow::Cow;

use kcap::redact;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let once = redact::line(Cow::Borrowed(text));
    if serde_json::from_str::<serde_json::Value>(text).is_ok() {
        assert!(
            serde_json::from_str::<serde_json::Value>(&once).is_ok(),
            "redaction broke the JSON of {text:?}: {once:?}"
        );
    }
});
