//! Building the AWS SDK clients from the standard configuration chain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_config::meta::region::RegionProviderChain;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_ecs::config::ConfigBag;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tracing::info;

use crate::metrics::Metrics;

/// How long start-up may spend finding credentials before it gives up with
/// a clear error instead of hanging.
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(15);

/// The ECS and EC2 clients kite uses.
#[derive(Clone, Debug)]
pub struct Clients {
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
}

/// Loads the AWS configuration (region, credentials, `AWS_ENDPOINT_URL*`)
/// the standard way, and checks up front that a region and credentials are
/// there, so a misconfigured kite fails at start-up with a clear message.
///
/// `fallback_region` (the region of the task kite runs in) is used only
/// when the standard chain finds no region.
pub async fn clients(fallback_region: Option<&str>) -> Result<Clients> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts());
    if let Some(fallback) = fallback_region {
        let chain = RegionProviderChain::default_provider();
        match chain.region().await {
            Some(region) => loader = loader.region(region),
            None => {
                info!(region = %fallback, "no AWS region configured: using the task's, from the task metadata endpoint");
                loader = loader.region(Region::new(fallback.to_owned()));
            }
        }
    }
    let config = loader.load().await;
    let Some(region) = config.region() else {
        bail!(
            "no AWS region configured: set AWS_REGION (or AWS_DEFAULT_REGION), \
             or a region in the AWS config file"
        );
    };
    let provider = config.credentials_provider().context(
        "no AWS credentials provider: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
         a profile, or run with an ECS task role",
    )?;
    match tokio::time::timeout(CREDENTIALS_TIMEOUT, provider.provide_credentials()).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            return Err(anyhow::Error::new(err).context(format!(
                "no AWS credentials found (region {region}): set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, a profile, or give the task an IAM task role"
            )))
        }
        Err(_) => bail!(
            "timed out after {CREDENTIALS_TIMEOUT:?} looking for AWS credentials (region {region})"
        ),
    }
    Ok(Clients::new(&config))
}

/// Bounds on every API call, so an endpoint that stops answering fails the
/// round (and the last good targets stay) instead of hanging discovery.
fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(20))
        .operation_timeout(Duration::from_secs(60))
        .build()
}

impl Clients {
    /// Clients from an SDK configuration.
    pub fn new(config: &SdkConfig) -> Clients {
        Clients {
            ecs: aws_sdk_ecs::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
        }
    }

    /// The same clients, counting every call and every throttled one in
    /// `metrics` ([`CallCounter`]): what `/metrics` shows, and how
    /// discovery learns that AWS throttles it. [`crate::proxy::run`] adds
    /// it; do not add it twice.
    pub fn counted(self, metrics: &Arc<Metrics>) -> Clients {
        let counter = CallCounter(metrics.clone());
        let ecs = self.ecs.config().to_builder().interceptor(counter.clone());
        let ec2 = self.ec2.config().to_builder().interceptor(counter);
        Clients {
            ecs: aws_sdk_ecs::Client::from_conf(ecs.build()),
            ec2: aws_sdk_ec2::Client::from_conf(ec2.build()),
        }
    }
}

/// Error codes with which AWS says "slow down".
const THROTTLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
];

/// An SDK interceptor that counts every HTTP attempt per operation, and the
/// attempts AWS answered with a throttling error.
#[derive(Clone, Debug)]
pub struct CallCounter(pub Arc<Metrics>);

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "kite::CallCounter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<Metadata>().map_or("unknown", |m| m.name());
        let throttled = context.response().is_some_and(|r| {
            let status = r.status().as_u16();
            status == 429
                || (matches!(status, 400 | 503) && r.body().bytes().is_some_and(names_throttling))
        });
        self.0.api_call(operation, throttled);
        Ok(())
    }
}

/// Whether an error body (ECS's JSON or EC2's XML) carries a throttling
/// error code.
fn names_throttling(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    THROTTLE_CODES.iter().any(|code| {
        text.contains(&format!("\"{code}\""))
            || text.contains(&format!("#{code}\""))
            || text.contains(&format!("<Code>{code}</Code>"))
    })
}

#[cfg(test)]
mod tests {
    use super::names_throttling;

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
}
