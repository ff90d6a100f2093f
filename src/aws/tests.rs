use std::sync::{Arc, Mutex};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_servicediscovery::config::Credentials;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;

use super::*;

/// Records the URI of each request, then stops it before it is sent.
#[derive(Clone, Debug, Default)]
struct Uris(Arc<Mutex<Vec<String>>>);

impl Intercept for Uris {
    fn name(&self) -> &'static str {
        "Uris"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let uri = context.request().uri().to_owned();
        self.0.lock().unwrap().push(uri);
        Err("recorded, not sent".into())
    }
}

/// Where DiscoverInstances would go: the clients kite builds from an
/// SDK configuration with `endpoint` (else AWS's own), with
/// [`Clients::without_host_prefix`] unless `inject_prefix`.
async fn discover_uri(endpoint: Option<&str>, inject_prefix: bool) -> String {
    let credentials = Credentials::new("AKID", "secret", None, None, "test");
    let mut sdk = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(credentials));
    if let Some(url) = endpoint {
        sdk = sdk.endpoint_url(url);
    }
    let mut clients = Clients::new(&sdk.build());
    if !inject_prefix {
        clients = clients.without_host_prefix();
    }
    let uris = Uris::default();
    let config = (clients.servicediscovery().config().to_builder())
        .interceptor(uris.clone())
        .build();
    let client = aws_sdk_servicediscovery::Client::from_conf(config);
    let sent = (client.discover_instances())
        .namespace_name("ns")
        .service_name("web")
        .send()
        .await;
    assert!(sent.is_err());
    let uris = uris.0.lock().unwrap();
    uris.first().cloned().unwrap_or_default()
}

#[tokio::test]
async fn discover_instances_host_prefix() {
    // AWS's own endpoint keeps its data- prefix...
    let aws = discover_uri(None, true).await;
    assert!(
        aws.starts_with("https://data-servicediscovery.us-east-1.amazonaws.com"),
        "{aws}"
    );
    // ... unless AWS_DISABLE_HOST_PREFIX_INJECTION says not to.
    let bare = discover_uri(None, false).await;
    assert!(
        bare.starts_with("https://servicediscovery.us-east-1.amazonaws.com"),
        "{bare}"
    );
    // A custom endpoint (AWS_ENDPOINT_URL) is reached as given.
    let custom = discover_uri(Some("http://127.0.0.1:4566"), true).await;
    assert!(custom.starts_with("http://127.0.0.1:4566"), "{custom}");
}

/// [`host_prefix_disabled`] with these variables and this config
/// file (at `AWS_CONFIG_FILE`).
async fn disabled(vars: &[(&str, &str)], config_file: &str) -> bool {
    let mut vars = vars.to_vec();
    vars.push(("AWS_CONFIG_FILE", "/config"));
    let fs = Fs::from_slice(&[("/config", config_file)]);
    host_prefix_disabled(&Env::from_slice(&vars), &fs).await
}

#[tokio::test]
async fn host_prefixes_are_turned_off_as_the_other_sdks_do() {
    let on = "[default]\ndisable_host_prefix_injection = true\n";
    let off = "[default]\ndisable_host_prefix_injection = false\n";
    let other = "[profile vpc]\ndisable_host_prefix_injection = true\n";
    // Neither set: prefixes stay.
    assert!(!disabled(&[], "").await);
    assert!(!disabled(&[], "[default]\nregion = us-east-1\n").await);
    // The config file's selected profile...
    assert!(disabled(&[], on).await);
    assert!(!disabled(&[], off).await);
    assert!(!disabled(&[], other).await, "not the selected profile");
    assert!(disabled(&[("AWS_PROFILE", "vpc")], other).await);
    // ... unless the environment says otherwise.
    let env = |v| [("AWS_DISABLE_HOST_PREFIX_INJECTION", v)];
    assert!(disabled(&env("true"), "").await);
    assert!(disabled(&env("TRUE"), off).await);
    assert!(!disabled(&env("false"), on).await);
    // Neither true nor false: warned about, prefixes stay.
    assert!(!disabled(&env("yes"), on).await);
    assert!(!disabled(&[], "[default]\ndisable_host_prefix_injection = 1\n").await);
}

#[test]
fn throttling_bodies_are_recognised() {
    assert!(names_throttling(
        br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#
    ));
    assert!(names_throttling(
        br#"{"__type":"com.amazonaws.ecs#ThrottlingException"}"#
    ));
    assert!(names_throttling(
        b"<Response><Errors><Error><Code>RequestLimitExceeded</Code></Error></Errors></Response>"
    ));
    assert!(!names_throttling(
        br#"{"__type":"ClusterNotFoundException","message":"Throttling is not the issue"}"#
    ));
    assert!(!names_throttling(
        b"<Code>InvalidInstanceID.Malformed</Code>"
    ));
}
