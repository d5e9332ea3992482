//! `/__admin/` under the gateway root: the switches and counters over HTTP, for a simulator in another process
//! (`paynet-auth simulate`) or a test in another language. It asks for no token, and its requests are not
//! gateway traffic: they count in no counter but those of connections and handshakes.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::gateway::{Ctx, read_body};
use super::mode;
use super::reply::{Answer, JSON};

/// What `/__admin/<action>` does, once the path has said which.
pub(crate) async fn handle(
    ctx: &Ctx,
    action: &str,
    request: Request<Incoming>,
) -> (Answer, &'static str) {
    let allowed = match action {
        "expire" | "mode" | "reset" => Method::POST,
        "stats" => Method::GET,
        _ => return (Answer::status(StatusCode::NOT_FOUND), "unknown admin path"),
    };
    if request.method() != allowed {
        let allow = if allowed == Method::GET {
            "GET"
        } else {
            "POST"
        };
        return (Answer::method_not_allowed(allow), "method not allowed");
    }
    let state = &ctx.state;
    match action {
        "expire" => {
            let expired = state.expire_all();
            (
                json_answer(json!({ "expired": expired }).to_string()),
                "expired every token",
            )
        }
        "reset" => {
            let switches = state.reset();
            (json_answer(mode::to_text(&switches)), "reset")
        }
        "stats" => {
            // Straight to text, keeping the order of SimStats' members (a `Value` would sort them).
            let stats = serde_json::to_string(&state.stats())
                .expect("the counters serialise: numbers and maps with string keys");
            (json_answer(stats), "stats")
        }
        _ => set_mode(ctx, request).await,
    }
}

async fn set_mode(ctx: &Ctx, request: Request<Incoming>) -> (Answer, &'static str) {
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(answer) => return (answer, "mode: body unreadable or too large"),
    };
    // An empty body changes nothing and answers the mode, as `{}` does: `curl -X POST` without data.
    let change = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(serde_json::Map::new())
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(change)) => Ok(change),
            Ok(_) => Err("the body must be a JSON object of switches".to_owned()),
            Err(error) => Err(format!("the body is not JSON: {error}")),
        }
    };
    let switches = change.and_then(|change| {
        ctx.state
            .try_update_switches(|switches| mode::apply(switches, &change))
    });
    match switches {
        Ok(switches) => {
            let mode = mode::to_text(&switches);
            tracing::debug!(%mode, "gateway simulator: switches changed");
            (json_answer(mode), "mode set")
        }
        Err(refusal) => (
            Answer::raw(
                StatusCode::BAD_REQUEST,
                JSON,
                json!({ "error": refusal }).to_string(),
            ),
            "mode refused",
        ),
    }
}

fn json_answer(text: String) -> Answer {
    Answer::raw(StatusCode::OK, JSON, text)
}
