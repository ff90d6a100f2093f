use super::*;

#[test]
fn families() {
    let f = parse_family("web").unwrap();
    assert_eq!((f.name.as_str(), f.revision), ("web", None));
    let f = parse_family("web-app_2:17").unwrap();
    assert_eq!((f.name.as_str(), f.revision), ("web-app_2", Some(17)));
    let f = parse_family("arn:aws:ecs:us-east-1:123456789012:task-definition/web:3").unwrap();
    assert_eq!((f.name.as_str(), f.revision), ("web", Some(3)));
    for bad in [
        "", "web:", "web:0", "web:x", "web:-1", "we b", ":3", "a:b:c",
    ] {
        assert!(parse_family(bad).is_err(), "{bad:?} should be rejected");
    }
    assert!(parse_family("web:x").unwrap_err().contains("revision"));
}

#[test]
fn port_maps() {
    assert_eq!(
        parse_port_map("8080:80").unwrap(),
        PortMap {
            local: 8080,
            container: 80
        }
    );
    for bad in ["8080", "0:80", "80:0", "a:80", "80:70000", ":80", "80:"] {
        assert!(parse_port_map(bad).is_err(), "{bad:?} should be rejected");
    }
    let maps = PortMaps::new(vec![parse_port_map("8080:80").unwrap()]).unwrap();
    assert_eq!(maps.listen_port(80), 8080);
    assert_eq!(maps.listen_port(443), 443);
    let twice = vec![
        parse_port_map("8080:80").unwrap(),
        parse_port_map("8080:81").unwrap(),
    ];
    assert!(PortMaps::new(twice).unwrap_err().contains("8080"));
}

#[test]
fn durations() {
    let ms = Duration::from_millis;
    assert_eq!(parse_duration("250ms").unwrap(), ms(250));
    assert_eq!(parse_duration("5s").unwrap(), ms(5000));
    assert_eq!(parse_duration("5").unwrap(), ms(5000));
    assert_eq!(parse_duration("1.5s").unwrap(), ms(1500));
    assert_eq!(parse_duration("1m30s").unwrap(), ms(90_000));
    assert_eq!(parse_duration("2h").unwrap(), ms(7_200_000));
    for bad in ["", "s", "5x", "-1", "5 s", "1e400", "ms5"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
    }
    assert!(parse_positive_duration("0s").is_err());
}

#[test]
fn log_levels() {
    assert_eq!(parse_log_level("DEBUG").unwrap(), "debug");
    assert_eq!(parse_log_level("fatal").unwrap(), "error");
    assert_eq!(
        parse_log_level("kite=trace,info").unwrap(),
        "kite=trace,info"
    );
    assert!(parse_log_level("verbose").is_err());
    assert!(parse_log_level("kite=loud").is_err());
    // Found by fuzzing: multi-byte characters made tracing-subscriber's
    // directive parser panic instead of failing.
    let err = parse_log_level("m\u{11},-m,\nm\u{fffd}\u{fffd}[\u{fffd}\u{fffd}s-").unwrap_err();
    assert!(err.contains("only visible ASCII"), "{err}");
    assert!(parse_log_level("kite[conn{client=a b}]=debug").is_ok());
}
