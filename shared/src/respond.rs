//! Sends a custom resource's answer to CloudFormation: one HTTP PUT of JSON to the request's
//! presigned `ResponseURL`, over the same TLS stack the SDK uses.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::{Error, Result};

/// How long one attempt to deliver an answer may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// PUTs `body` to `url`, retrying a failed attempt twice. The presigned URL signs an empty
/// content type, so none is sent.
pub async fn put(url: &str, body: Vec<u8>) -> Result<()> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|err| Error::Permanent(format!("no TLS root certificates: {err}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);

    let mut last_error = String::new();
    for attempt in 1..=3 {
        let request = hyper::Request::put(url)
            .header("content-length", body.len())
            .body(Full::new(Bytes::from(body.clone())))
            .map_err(|err| Error::Input(format!("the ResponseURL is not a valid URL: {err}")))?;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => return Ok(()),
            Ok(Ok(response)) => {
                let status = response.status();
                let text = response.into_body().collect().await.map(|b| b.to_bytes());
                let text = text.map(|b| String::from_utf8_lossy(&b).into_owned());
                last_error = format!("HTTP {status}: {}", text.unwrap_or_default());
            }
            Ok(Err(err)) => last_error = err.to_string(),
            Err(_) => last_error = format!("no answer within {ATTEMPT_TIMEOUT:?}"),
        }
        tracing::warn!(
            attempt,
            error = last_error,
            "sending the custom resource answer failed"
        );
        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
    }
    Err(Error::Transient(format!(
        "the custom resource answer could not be delivered: {last_error}"
    )))
}
