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
use aws_smithy_runtime_api::client::endpoint::EndpointPrefix;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_types::endpoint_config::EndpointUrl;
use aws_types::os_shim_internal::{Env, Fs};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// How long start-up may spend finding credentials before it gives up with
/// a clear error instead of hanging.
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(15);

/// What builds the ECS, EC2 and AWS Cloud Map clients kite uses, each
/// when it is asked for: a kite discovering with one source builds no
/// client of the other (an SDK client holds about 16 KiB, and the first of
/// a service sets up that service's shared data too).
#[derive(Clone, Debug)]
pub struct Clients {
    config: SdkConfig,
    /// Counts every call ([`Clients::counted`]).
    counter: Option<CallCounter>,
    /// Whether Cloud Map requests to AWS's own endpoint keep their host
    /// prefix ([`Clients::without_host_prefix`]).
    inject_prefix: bool,
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
    let clients = Clients::new(&config);
    Ok(if host_prefix_disabled(&Env::real(), &Fs::real()).await {
        clients.without_host_prefix()
    } else {
        clients
    })
}

/// Whether the standard setting turns host prefixes off, as the other AWS
/// SDKs read it: `AWS_DISABLE_HOST_PREFIX_INJECTION`, else
/// `disable_host_prefix_injection` in the selected profile of the shared
/// config file (`AWS_PROFILE`, `AWS_CONFIG_FILE`). A value other than
/// `true` or `false` is warned about and leaves the prefixes on.
async fn host_prefix_disabled(env: &Env, fs: &Fs) -> bool {
    let (source, value) = match env.get("AWS_DISABLE_HOST_PREFIX_INJECTION") {
        Ok(value) => ("AWS_DISABLE_HOST_PREFIX_INJECTION", value),
        Err(_) => {
            let files = Default::default(); // the standard config and credentials files
            let Ok(profiles) = aws_config::profile::load(fs, env, &files, None).await else {
                return false; // the SDK's own loading has said why
            };
            match profiles.get("disable_host_prefix_injection") {
                Some(value) => ("disable_host_prefix_injection", value.to_owned()),
                None => return false,
            }
        }
    };
    match value.trim() {
        v if v.eq_ignore_ascii_case("true") => true,
        v if v.eq_ignore_ascii_case("false") => false,
        v => {
            warn!("{source} is {v:?}, neither true nor false: keeping host prefixes (set it to true or false)");
            false
        }
    }
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
            config: config.clone(),
            counter: None,
            inject_prefix: true,
        }
    }

    /// The same clients, with no host prefix on any endpoint (what
    /// `AWS_DISABLE_HOST_PREFIX_INJECTION=true` asks of the SDKs).
    pub fn without_host_prefix(self) -> Clients {
        Clients {
            inject_prefix: false,
            ..self
        }
    }

    /// The same clients, counting every call and every throttled one in
    /// `metrics` ([`CallCounter`]): what `/metrics` shows, and how
    /// discovery learns that AWS throttles it. [`crate::proxy::run`] adds
    /// it; do not add it twice.
    pub fn counted(self, metrics: &Arc<Metrics>) -> Clients {
        Clients {
            counter: Some(CallCounter(metrics.clone())),
            ..self
        }
    }

    /// An ECS client.
    pub fn ecs(&self) -> aws_sdk_ecs::Client {
        let mut config = aws_sdk_ecs::config::Builder::from(&self.config);
        if let Some(counter) = &self.counter {
            config = config.interceptor(counter.clone());
        }
        aws_sdk_ecs::Client::from_conf(config.build())
    }

    /// An EC2 client.
    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        let mut config = aws_sdk_ec2::config::Builder::from(&self.config);
        if let Some(counter) = &self.counter {
            config = config.interceptor(counter.clone());
        }
        aws_sdk_ec2::Client::from_conf(config.build())
    }

    /// An AWS Cloud Map client that sends DiscoverInstances to a custom
    /// endpoint (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SERVICEDISCOVERY`, or
    /// `endpoint_url` in the configuration) as given, and, after
    /// [`Clients::without_host_prefix`], to AWS's own endpoint without its
    /// `data-` host prefix either (the `HostPrefix` interceptor).
    ///
    /// The Rust SDK puts the prefix before every endpoint's host, its own
    /// or a custom one, and has no setting to stop it: a VPC endpoint's or
    /// an emulator's host (`data-127.0.0.1`) would then not resolve.
    pub fn servicediscovery(&self) -> aws_sdk_servicediscovery::Client {
        let prefix = HostPrefix {
            inject_prefix: self.inject_prefix,
        };
        let mut config =
            aws_sdk_servicediscovery::config::Builder::from(&self.config).interceptor(prefix);
        if let Some(counter) = &self.counter {
            config = config.interceptor(counter.clone());
        }
        aws_sdk_servicediscovery::Client::from_conf(config.build())
    }
}

/// An SDK interceptor that drops an operation's host prefix for a custom
/// endpoint, or always without `inject_prefix`.
#[derive(Clone, Copy, Debug)]
struct HostPrefix {
    inject_prefix: bool,
}

impl Intercept for HostPrefix {
    fn name(&self) -> &'static str {
        "kite::HostPrefix"
    }

    // After every interceptor's read_before_execution (where the
    // operation sets its prefix), before the endpoint is applied.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let custom = cfg.load::<EndpointUrl>().is_some();
        if custom || !self.inject_prefix {
            cfg.interceptor_state().unset::<EndpointPrefix>();
        }
        Ok(())
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
mod tests;
