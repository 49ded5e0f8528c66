//! The Kinesis client: aws-config's standard chain (env, profile, SSO, IMDS…) with one rustls/ring
//! HTTPS client; `AWS_ENDPOINT_URL_KINESIS` or an explicit endpoint point it at a local server.

use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls;

pub use aws_sdk_kinesis::Client;

pub async fn client(region: Option<&str>, endpoint: Option<&str>) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_string()));
    }
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    Client::new(&loader.load().await)
}
