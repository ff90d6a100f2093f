//! `kite attach --task`: a task id or ARN, old or new format, plus the other
//! attach values a user types (`--docker-host`, `--detach-keys`). Errors are
//! fine; panics are not, and whatever parses names itself again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(task) = kite::config::parse_task_ref(&text) {
        assert!(!task.id.is_empty());
        assert!(task.id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
        // What kite sends to DescribeTasks parses to the same task.
        let again = kite::config::parse_task_ref(task.lookup()).expect("lookup parses");
        assert_eq!(again, task);
    }
    let _ = kite::config::parse_docker_host(&text);
    if let Ok(keys) = kite::config::parse_detach_keys(&text) {
        let _ = format!("{keys:?}");
    }
});
