//! Any text: the reference parser never panics, and whatever it accepts
//! formats to a canonical text that parses back to the same reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zafe_core::reference::Reference;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reference) = Reference::parse(text) {
        let canonical = reference.to_string();
        let reparsed = Reference::parse(&canonical).expect("canonical text parses");
        assert_eq!(reparsed, reference);
        assert_eq!(reparsed.to_string(), canonical);
        let _ = reference.kv_location("secret");
    }
});
