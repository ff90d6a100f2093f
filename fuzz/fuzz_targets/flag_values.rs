//! The other flag value parsers that take outside input (flags and KITE_*
//! variables): family[:revision], service and container names, durations,
//! log levels. Errors are fine; panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(f) = kite::config::parse_family(&text) {
        assert!(!f.name.is_empty());
    }
    let _ = kite::config::parse_service(&text);
    let _ = kite::config::parse_container_name(&text);
    if let Ok(d) = kite::config::parse_positive_duration(&text) {
        assert!(!d.is_zero());
    }
    let _ = kite::config::parse_duration(&text);
    let _ = kite::config::parse_log_level(&text);
});
