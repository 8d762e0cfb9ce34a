//! Any text: template parsing never panics, and text without placeholders
//! renders unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zafe_core::template::Template;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(template) = Template::parse(text) {
        let rendered = template.render(|_| "X");
        if template.references().is_empty() {
            assert_eq!(rendered, text);
        }
    }
});
