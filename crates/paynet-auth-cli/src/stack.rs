//! The client stack the commands share: the library's HTTPS client (with a credential's `tls` and `proxy`), the
//! layer, and the configuration's `request_timeout` around both, from the call's start to its answer's last byte.

use std::path::Path;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use paynet_auth::config::{Config, PaynetConfig};
use paynet_auth::deadline::Deadline;
use paynet_auth::hyper_client::{HttpClient, HttpError};
use paynet_auth::setup::Configured;
use paynet_auth::{BoxError, PaynetAuth};
use tower::ServiceExt;
use tower::util::MapErr;

pub(crate) type Inner = MapErr<HttpClient, fn(HttpError) -> BoxError>;

/// The client a credential's `tls` and `proxy` describe (the environment's proxy variables without `proxy`).
/// The configuration was checked when loaded, so this fails only if a file changed since.
pub(crate) fn client(config: &PaynetConfig) -> Result<Inner, String> {
    let client = HttpClient::from_config(config)
        .map_err(|e| format!("credential `{}`: {e}", config.credential_name()))?;
    Ok(client.map_err(box_error as fn(_) -> _))
}

fn box_error(error: HttpError) -> BoxError {
    Box::new(error)
}

pub(crate) fn load_config(path: &Path) -> Result<Config, String> {
    Config::from_yaml_file(path).map_err(|e| crate::one_line(&e))
}

/// The credential a command acts as: the one `--credential` names, else the configuration's default.
pub(crate) fn credential<'a>(
    config: &'a Config,
    name: Option<&str>,
) -> Result<&'a PaynetConfig, String> {
    let Some(name) = name else {
        return Ok(config.default_credential());
    };
    config.credential(name).ok_or_else(|| {
        let known: Vec<&str> = config
            .credentials()
            .iter()
            .map(|c| c.credential_name())
            .collect();
        format!(
            "--credential {name}: no credential of that name in the configuration (configured: {})",
            known.join(", ")
        )
    })
}

/// The manager and the layer of the one credential `config`, over its store, in one pass.
pub(crate) async fn configured(config: &PaynetConfig) -> Result<Configured, String> {
    Configured::open(&Config::from(config.clone()))
        .await
        .map_err(|e| crate::one_line(&e))
}

/// The credential's client wrapped in the stack's layer, within the configured `request_timeout`.
pub(crate) fn authorised(
    configured: &Configured,
    config: &PaynetConfig,
) -> Result<Deadline<PaynetAuth<Inner>>, String> {
    Ok(configured.bounded_service(client(config)?))
}

/// A JSON-RPC call to `path` below the gateway root; an error naming the URL when the path makes it invalid.
pub(crate) fn rpc_request(
    config: &PaynetConfig,
    path: &str,
    method: &str,
    params: &serde_json::Value,
    id: u64,
) -> Result<Request<Full<Bytes>>, String> {
    let body = serde_json::json!({"jsonrpc": "2.0", "method": method, "id": id, "params": params});
    post(&config.url(path), Bytes::from(body.to_string()))
}

/// A JSON POST of `body` to `url`; an error naming the URL when it is not a valid request URI.
pub(crate) fn post(url: &str, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
    Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| format!("cannot send a request to \"{url}\": {e}"))
}

pub(crate) fn parse_params(params: Option<&str>) -> Result<serde_json::Value, String> {
    match params {
        None => Ok(serde_json::json!({})),
        Some(text) => {
            serde_json::from_str(text).map_err(|e| format!("PARAMS_JSON is not valid JSON: {e}"))
        }
    }
}
