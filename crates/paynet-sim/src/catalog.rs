//! The gateway's read-only answers: deposit, categories, providers, services, card OTP, and provider logos.
//!
//! The data is small and fixed so that tests can rely on it; it only has to look like what an agent gateway
//! returns.

use http::{StatusCode, Uri};
use serde_json::{Map, Value, json};

use super::gateway::Trace;
use super::login::Account;
use super::reply::{Answer, RpcError};

/// `(id, name)`.
const CATEGORIES: &[(u64, &str)] = &[
    (1, "Mobile operators"),
    (2, "Internet and TV"),
    (3, "Utilities"),
    (4, "Government services"),
];

/// `(id, category id, name, status)`.
const PROVIDERS: &[(u64, u64, &str, &str)] = &[
    (101, 1, "Beeline", "ACTIVE"),
    (102, 1, "Ucell", "ACTIVE"),
    (103, 1, "Mobiuz", "ACTIVE"),
    (104, 1, "Uzmobile", "ACTIVE"),
    (201, 2, "Uzonline", "ACTIVE"),
    (202, 2, "Sarkor Telecom", "MAINTENANCE"),
    (301, 3, "Hududgaz", "ACTIVE"),
    (302, 3, "Hududiy elektr tarmoqlari", "ACTIVE"),
    (401, 4, "Soliq", "ACTIVE"),
];

/// A 1×1 transparent PNG: enough for a client to see an image come back.
const LOGO_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x90, 0xcf, 0xdf, 0xf2,
    0x1f, 0x00, 0x04, 0x35, 0x02, 0x42, 0x7d, 0x4c, 0x97, 0xdb, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Answers a read-only method that passed the token check.
pub(crate) fn answer(
    method: &str,
    params: &Map<String, Value>,
    account: &Account,
) -> Result<Value, RpcError> {
    match method {
        "getDepositInfo" => Ok(json!({
            "agentId": account.agent_id(),
            "terminalId": account.terminal_id().to_string(),
            "deposit": 125_000_000,
            "overdraft": 0,
            "currency": "UZS",
        })),
        "getCategoriesList" => Ok(json!({
            "categories": CATEGORIES
                .iter()
                .map(|(id, name)| json!({"id": id, "name": name}))
                .collect::<Vec<_>>(),
        })),
        "getProvidersList" => {
            let category = optional_id(params, "categoryId")?;
            Ok(json!({
                "providers": PROVIDERS
                    .iter()
                    .filter(|provider| category.is_none_or(|category| provider.1 == category))
                    .map(|&(id, category_id, name, _)| json!({"id": id, "categoryId": category_id, "name": name}))
                    .collect::<Vec<_>>(),
            }))
        }
        "getProvidersStatus" => Ok(json!({
            "providers": PROVIDERS
                .iter()
                .map(|&(id, _, _, status)| json!({"providerId": id, "status": status}))
                .collect::<Vec<_>>(),
        })),
        "getServicesList" => {
            let provider = optional_id(params, "providerId")?;
            Ok(json!({
                "services": PROVIDERS
                    .iter()
                    .filter(|candidate| provider.is_none_or(|provider| candidate.0 == provider))
                    .map(|&(provider_id, category_id, ..)| service(provider_id, category_id))
                    .collect::<Vec<_>>(),
            }))
        }
        "getServiceInfo" => {
            let wanted = optional_id(params, "serviceId")?.ok_or(RpcError::INVALID_PARAMS)?;
            PROVIDERS
                .iter()
                .find(|provider| service_id(provider.0) == wanted)
                .map(|&(provider_id, category_id, ..)| service_info(provider_id, category_id))
                .ok_or(RpcError::INVALID_PARAMS)
        }
        "getCardOtp" => {
            Ok(json!({"otpSent": true, "phoneMask": "+998 ** *** ** 67", "expiresIn": 120}))
        }
        _ => Err(RpcError::METHOD_NOT_FOUND),
    }
}

/// `GET /v2/getLogo?providerId=..&size=..`, which needs no token.
pub(crate) fn logo(uri: &Uri, trace: &mut Trace) -> Answer {
    let provider = uri.query().unwrap_or("").split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == "providerId").then(|| value.parse::<u64>().ok())?
    });
    match provider {
        None => {
            trace.outcome = "logo without a valid providerId";
            Answer::status(StatusCode::BAD_REQUEST)
        }
        Some(id) if !PROVIDERS.iter().any(|provider| provider.0 == id) => {
            trace.outcome = "logo of an unknown provider";
            Answer::status(StatusCode::NOT_FOUND)
        }
        Some(_) => {
            trace.outcome = "logo";
            Answer::raw(StatusCode::OK, "image/png", LOGO_PNG)
        }
    }
}

/// An id parameter that may be absent, given as a number or as a numeric string.
fn optional_id(params: &Map<String, Value>, name: &str) -> Result<Option<u64>, RpcError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => number.as_u64().map(Some).ok_or(RpcError::INVALID_PARAMS),
        Some(Value::String(text)) => text.parse().map(Some).map_err(|_| RpcError::INVALID_PARAMS),
        Some(_) => Err(RpcError::INVALID_PARAMS),
    }
}

/// Each provider offers one service, numbered after it.
fn service_id(provider_id: u64) -> u64 {
    provider_id * 10 + 1
}

fn service_name(category_id: u64) -> &'static str {
    match category_id {
        1 => "Balance top-up",
        2 => "Subscription payment",
        3 => "Bill payment",
        _ => "Payment",
    }
}

fn service(provider_id: u64, category_id: u64) -> Value {
    json!({
        "id": service_id(provider_id),
        "providerId": provider_id,
        "name": service_name(category_id),
        "minAmount": 1_000,
        "maxAmount": 10_000_000,
    })
}

fn service_info(provider_id: u64, category_id: u64) -> Value {
    let field = match category_id {
        1 => {
            json!({"name": "phone", "type": "phone", "mask": "+998 ## ### ## ##", "required": true})
        }
        _ => json!({"name": "account", "type": "string", "required": true}),
    };
    json!({
        "id": service_id(provider_id),
        "providerId": provider_id,
        "name": service_name(category_id),
        "minAmount": 1_000,
        "maxAmount": 10_000_000,
        "currency": "UZS",
        "commission": 0,
        "fields": [field],
    })
}
