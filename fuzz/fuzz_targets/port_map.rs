//! `--port-map LOCAL:CONTAINER`: parse each comma-separated item, then the
//! set; whatever parses round-trips through its own numbers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut maps = Vec::new();
    for item in text.split(',') {
        if let Ok(map) = kite::config::parse_port_map(item) {
            let again = kite::config::parse_port_map(&format!("{}:{}", map.local, map.container))
                .expect("a parsed port map prints as a valid one");
            assert_eq!(again, map);
            maps.push(map);
        }
    }
    if let Ok(set) = kite::config::PortMaps::new(maps.clone()) {
        for m in &maps {
            assert_eq!(set.listen_port(m.container), m.local);
        }
    }
});
