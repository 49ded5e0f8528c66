//! The Kinesis client: credentials from aws-config's standard chain (env, profile, SSO, IMDS…), the
//! region from the config, the environment or the profile (never instance metadata), one
//! rustls/ring HTTPS client; `AWS_ENDPOINT_URL_KINESIS` or an explicit endpoint point it at a
//! local server. The relay builds it lazily (`LazyClient`).

use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::{BehaviorVersion, Region};
use std::time::Duration;

use aws_smithy_http_client::tls;

pub use aws_sdk_kinesis::Client;

/// The AWS region: `configured`, else the environment (`AWS_REGION`, `AWS_DEFAULT_REGION`) or the
/// AWS profile. Instance metadata is not asked: off AWS that is a useless network call and a
/// delay, and a region that only it knows is better written down. `None`: no region anywhere.
pub async fn region(configured: Option<&str>) -> Option<String> {
    if let Some(r) = configured {
        return Some(r.to_string());
    }
    RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(ProfileFileRegionProvider::new())
        .region()
        .await
        .map(|r| r.to_string())
}

/// A Kinesis client (in the region of [`region`]).
pub async fn client(region: Option<&str>, endpoint: Option<&str>) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    // Bounded waits: a Kinesis that accepts connections and never answers must not hold the
    // relay's calls for ever (the SDK sets no read or operation timeout by default). A timed-out
    // call's outcome is unknown: its events are sent again (at least once, deduped by id).
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts);
    if let Some(r) = self::region(region).await {
        loader = loader.region(Region::new(r));
    }
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    Client::new(&loader.load().await)
}

/// A Kinesis client built on first use ([`LazyClient::init`]): a proxy whose rules publish
/// nothing never asks AWS for anything (region, credentials).
pub struct LazyClient {
    client: Option<Client>,
    region: Option<String>,
    endpoint: Option<String>,
}

impl LazyClient {
    pub fn new(region: Option<String>, endpoint: Option<String>) -> LazyClient {
        LazyClient {
            client: None,
            region,
            endpoint,
        }
    }

    /// Builds the client if it is not built yet.
    pub async fn init(&mut self) {
        if self.client.is_none() {
            self.client = Some(client(self.region.as_deref(), self.endpoint.as_deref()).await);
        }
    }

    /// The client, once built.
    pub fn get(&self) -> Option<&Client> {
        self.client.as_ref()
    }
}

impl From<Client> for LazyClient {
    fn from(client: Client) -> LazyClient {
        LazyClient {
            client: Some(client),
            region: None,
            endpoint: None,
        }
    }
}

/// One event read back from a stream.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub shard_id: String,
    pub partition_key: String,
    pub sequence_number: String,
    /// The event's place in its Kinesis record when that record is a KPL aggregate.
    pub sub_sequence_number: Option<usize>,
    pub data: Vec<u8>,
}

/// Every event of a stream from the start (`TRIM_HORIZON`), shard by shard, each shard in
/// sequence order, aggregated records taken apart: what was published, for `strangler stream
/// read` and the tests. A record that looks aggregated but does not decode is returned whole.
pub async fn read_stream(
    c: &Client,
    stream: &str,
) -> Result<Vec<StreamRecord>, aws_sdk_kinesis::Error> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let mut out = Vec::new();
    let shards = c.list_shards().stream_name(stream).send().await?;
    for shard in shards.shards() {
        let mut iter = c
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator()
            .map(str::to_string);
        while let Some(it) = iter {
            let r = c
                .get_records()
                .shard_iterator(it)
                .limit(1000)
                .send()
                .await?;
            if r.records().is_empty() {
                break;
            }
            for rec in r.records() {
                let data = rec.data().as_ref();
                let sequence_number = rec.sequence_number().to_string();
                match crate::aggregate::decode(data) {
                    Ok(Some(events)) => {
                        out.extend(events.into_iter().enumerate().map(|(i, e)| StreamRecord {
                            shard_id: shard.shard_id().to_string(),
                            partition_key: e.partition_key,
                            sequence_number: sequence_number.clone(),
                            sub_sequence_number: Some(i),
                            data: e.data,
                        }));
                    }
                    Ok(None) | Err(_) => out.push(StreamRecord {
                        shard_id: shard.shard_id().to_string(),
                        partition_key: rec.partition_key().unwrap_or_default().to_string(),
                        sequence_number,
                        sub_sequence_number: None,
                        data: data.to_vec(),
                    }),
                }
            }
            iter = r.next_shard_iterator().map(str::to_string);
        }
    }
    Ok(out)
}

/// Why DescribeStreamSummary gave no description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescribeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The call failed: [`error_line`]'s words for it.
    #[error("{0}")]
    Failed(String),
    #[error("no stream description")]
    Empty,
}

/// DescribeStreamSummary for a stream given by name or ARN (as rule files give it), within
/// `limit`.
pub async fn describe(
    c: &Client,
    stream: &str,
    limit: Duration,
) -> Result<aws_sdk_kinesis::types::StreamDescriptionSummary, DescribeError> {
    let call = c.describe_stream_summary();
    let call = if stream.starts_with("arn:") {
        call.stream_arn(stream)
    } else {
        call.stream_name(stream)
    };
    let out = tokio::time::timeout(limit, call.send())
        .await
        .map_err(|_| DescribeError::Timeout(limit))?
        .map_err(|e| DescribeError::Failed(error_line(&e.into())))?;
    out.stream_description_summary.ok_or(DescribeError::Empty)
}

/// One line for a person at a terminal: what went wrong with a Kinesis call, in words, and what
/// to set or run about it (the SDK's own rendering is a nested struct of about a kilobyte).
pub fn error_line(e: &aws_sdk_kinesis::Error) -> String {
    use aws_sdk_kinesis::error::ProvideErrorMetadata as _;
    if let Some(code) = e.code() {
        let hint = match code {
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "IncompleteSignature"
            | "MissingAuthenticationToken" => {
                " (the credentials are not accepted: check AWS_PROFILE or AWS_ACCESS_KEY_ID / \
                 AWS_SECRET_ACCESS_KEY, and AWS_SESSION_TOKEN for temporary ones)"
            }
            "AccessDeniedException" => {
                " (the credentials lack a permission: `strangler iam-policy` prints what the \
                 proxy needs)"
            }
            "ResourceNotFoundException" => {
                " (check the stream's name and the region; `strangler stream create` makes one)"
            }
            _ => "",
        };
        return format!("{code}: {}{hint}", e.message().unwrap_or("no message"));
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(ce) =
            c.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
        {
            return match ce {
                aws_credential_types::provider::error::CredentialsError::CredentialsNotLoaded(
                    _,
                ) => "no AWS credentials found (tried the environment, the AWS profile, web \
                     identity, ECS and instance metadata): set AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
                    .to_string(),
                other => format!(
                    "the AWS credentials could not be loaded: {}",
                    first_line(other)
                ),
            };
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return format!(
                "cannot reach Kinesis: {io} (is the server up, and the endpoint right? the \
                 config's `endpoint` or AWS_ENDPOINT_URL_KINESIS; the region's AWS endpoint when \
                 neither is set)"
            );
        }
        if let Some(ce) = c.downcast_ref::<aws_sdk_kinesis::error::ConnectorError>()
            && ce.is_timeout()
        {
            return "Kinesis did not answer in time (is the endpoint right and reachable?)"
                .to_string();
        }
        cause = c.source();
    }
    first_line(&aws_sdk_kinesis::error::DisplayErrorContext(e))
}

fn first_line(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    text.lines().next().unwrap_or("unknown error").to_string()
}
