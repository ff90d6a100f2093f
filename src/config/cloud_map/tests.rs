use super::parse_cloud_map;

#[test]
fn namespace_and_service() {
    let got = parse_cloud_map(" internal.example/web ").unwrap();
    assert_eq!(
        (got.namespace.as_str(), got.service.as_str()),
        ("internal.example", "web")
    );
    // An HTTP namespace may hold a '/'; the service never does.
    let got = parse_cloud_map("team/apps/web-1").unwrap();
    assert_eq!(
        (got.namespace.as_str(), got.service.as_str()),
        ("team/apps", "web-1")
    );
    for (bad, says) in [
        ("web", "no '/'"),
        ("/web", "no namespace"),
        ("ns/", "no service"),
        ("ns/we b", "' '"),
        ("n s/web", "' '"),
    ] {
        let err = parse_cloud_map(bad).unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
    }
}
