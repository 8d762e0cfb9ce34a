//! Any bytes: the dotenv parser never panics, reports a line inside the
//! file, renders what it accepts back to the same text, and every value
//! written with `quote_value` reads back exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zafe_core::dotenv;

fuzz_target!(|data: &[u8]| {
    match dotenv::parse_bytes(data) {
        Ok(document) => {
            let text = std::str::from_utf8(data).expect("parsed text is UTF-8");
            assert_eq!(document.render(), text);
            // Rewriting every value as itself reads back the same values.
            let rewritten = document
                .render_with(|a| Some(a.value().expose().to_string()))
                .expect("parsed values hold no NUL");
            let reread = dotenv::parse(&rewritten).expect("rewritten text parses");
            let before: Vec<_> = document.assignments().map(|a| (a.key(), a.value().expose())).collect();
            let after: Vec<_> = reread.assignments().map(|a| (a.key(), a.value().expose())).collect();
            assert_eq!(before, after);
        }
        Err(error) => {
            let lines = 1 + data.iter().filter(|&&b| b == b'\n').count();
            assert!(error.line >= 1 && error.line <= lines);
        }
    }
});
