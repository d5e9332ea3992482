//! `paynet-auth call`.

use std::path::Path;
use std::process::ExitCode;

use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::interrupt::{self, Signals};
use crate::output::outln;
use crate::stack;

pub(crate) async fn run(
    config_path: &Path,
    path: &str,
    method: &str,
    params: Option<&str>,
    credential: Option<&str>,
) -> Result<ExitCode, String> {
    let file = stack::load_config(config_path)?;
    let config = stack::credential(&file, credential)?;
    let params = stack::parse_params(params)?;
    let mut signals = Signals::install()?;
    let ready = stack::configured(config).await?;
    let service = stack::authorised(&ready, config)?;
    let request = stack::rpc_request(config, path, method, &params, 1)?;
    let exchange = async {
        let response = service
            .oneshot(request)
            .await
            .map_err(|e| crate::one_line(&*e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                format!(
                    "reading the response from {} failed: {}",
                    config.url(path),
                    crate::one_line(&*e)
                )
            })?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::select! {
        biased;
        signal = signals.caught() => return Ok(interrupt::stop(signal, ready.manager()).await),
        answer = exchange => answer?,
    };
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
        format!(
            "{} answered HTTP {status} with a body that is not JSON ({} bytes)",
            config.url(path),
            body.len()
        )
    })?;
    outln!("{json}")?;
    if json.get("result").is_some() {
        return Ok(ExitCode::SUCCESS);
    }
    match json.get("error") {
        Some(error) => eprintln!(
            "error: {} answered JSON-RPC error {} \"{}\"",
            config.url(path),
            error
                .get("code")
                .map_or("?".to_owned(), ToString::to_string),
            paynet_auth::redact::gateway_text(
                error.get("message").and_then(|m| m.as_str()).unwrap_or(""),
                &[secrecy::ExposeSecret::expose_secret(&config.password)]
            )
        ),
        None => eprintln!(
            "error: {} answered HTTP {status} without a result",
            config.url(path)
        ),
    }
    Ok(ExitCode::FAILURE)
}
