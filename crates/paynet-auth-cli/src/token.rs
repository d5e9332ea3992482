//! `paynet-auth token …` and `paynet-auth migrate`.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use paynet_auth::token::{LoginSender, TokenRecord};

use crate::stack;

#[derive(clap::Subcommand)]
pub(crate) enum TokenAction {
    /// Shows the stored token's key, generation, times and fingerprint (never the token), and who holds the
    /// refresh lease until when.
    Status,
    /// Logs in now and stores the new token.
    Refresh,
    /// Removes the stored token; the next call logs in.
    Clear,
}

pub(crate) async fn run(
    config_path: &Path,
    action: TokenAction,
    credential: Option<&str>,
) -> Result<ExitCode, String> {
    let file = stack::load_config(config_path)?;
    let config = stack::credential(&file, credential)?;
    let ready = stack::stack(config).await?;
    let manager = ready.manager();
    match action {
        TokenAction::Status => {
            println!("credential: {}", manager.name());
            println!("key:        {}", manager.credential_key());
            println!("store:      {}", manager.store_description());
            // A store that does not answer is reported, not a reason to stop: health says what it means.
            match manager.stored().await {
                Ok(None) => println!("token:      none stored"),
                Ok(Some(record)) => print_record(&record),
                Err(error) => println!("token:      unknown: {}", crate::one_line(&error)),
            }
            match manager.lease().await {
                Ok(None) => println!("lease:      never taken"),
                Ok(Some(lease)) => {
                    let state = if lease.is_held() { "held" } else { "free" };
                    println!("lease:      {state}, last taken by {}", lease.holder);
                    println!("lease from: {}", time(lease.acquired_at_ms));
                    println!("lease until:{:>25}", time(lease.expires_at_ms));
                }
                Err(error) => println!("lease:      unknown: {}", crate::one_line(&error)),
            }
            // This process's view: what it did (these reads) and how it stands after them.
            let health = manager.health();
            println!("health:     {health}");
            println!("stats:      {}", manager.stats());
            if !matches!(health, paynet_auth::Health::Ready) {
                return Ok(ExitCode::FAILURE);
            }
        }
        TokenAction::Refresh => {
            let token = manager
                .force_refresh(LoginSender::from_service(stack::client(config)?))
                .await
                .map_err(|e| crate::one_line(&e))?;
            println!("refreshed:  generation {}", token.generation());
            print_record(token.record());
        }
        TokenAction::Clear => {
            manager.clear().await.map_err(|e| crate::one_line(&e))?;
            println!("cleared the stored token of {}", manager.credential_key());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_record(record: &TokenRecord) {
    println!("generation: {}", record.generation);
    println!("fingerprint:{:>9}", record.fingerprint());
    println!("obtained:   {}", time(record.obtained_at_ms));
    match record.expires_at_ms {
        Some(at) => println!("expires:    {}", time(at)),
        None => println!("expires:    when the gateway rejects it"),
    }
    println!("written by: {}", record.written_by);
    if let Some(login) = &record.meta.user_login {
        println!("user login: {login}");
    }
}

fn time(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// Applies the migrations to the store of every credential (each once, however many credentials share it).
pub(crate) async fn migrate(config_path: &Path) -> Result<ExitCode, String> {
    let config = stack::load_config(config_path)?;
    let mut done: Vec<&str> = Vec::new();
    for credential in config.credentials() {
        if done.contains(&credential.store.url.as_str()) {
            continue;
        }
        done.push(&credential.store.url);
        let store = paynet_auth::store::connect(&credential.store.url, credential.store_options())
            .await
            .map_err(|e| crate::one_line(&e))?;
        println!("migrations applied to {}", store.describe());
    }
    Ok(ExitCode::SUCCESS)
}
