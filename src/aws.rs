//! Building the AWS SDK clients from the standard configuration chain.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_config::BehaviorVersion;
use aws_credential_types::provider::ProvideCredentials;

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
pub async fn clients() -> Result<Clients> {
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
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
    Ok(Clients {
        ecs: aws_sdk_ecs::Client::new(&config),
        ec2: aws_sdk_ec2::Client::new(&config),
    })
}
