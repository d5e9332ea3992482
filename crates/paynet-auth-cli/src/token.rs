//! `paynet-auth token …` and `paynet-auth migrate`.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use std::sync::Arc;

use paynet_auth::config::{Config, PaynetConfig};
use paynet_auth::error::SetupError;
use paynet_auth::record::TokenRecord;
use paynet_auth::redact;
use paynet_auth::setup::Configured;
use paynet_auth::store::{MemoryStore, TokenStore};
use paynet_auth::token::LoginSender;

use crate::interrupt::{self, Signals};
use crate::output::outln;
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
    match action {
        TokenAction::Status => status(config).await,
        TokenAction::Refresh => refresh(config).await,
        TokenAction::Clear => {
            let ready = stack::configured(config).await?;
            let manager = ready.manager();
            manager.clear().await.map_err(|e| crate::one_line(&e))?;
            outln!("cleared the stored token of {}", manager.store_key())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How long `token status` waits for the store: to open it (connect and apply the migrations), then for each
/// read. Twice the connection timeout, since opening may connect twice (migrations, then the pool).
fn status_bound(config: &PaynetConfig) -> Duration {
    config.store.connect_timeout.saturating_mul(2)
}

/// What is stored and how this process stands; a store that cannot be opened or read is reported, not a reason
/// to stop, and makes the exit status non-zero.
async fn status(config: &PaynetConfig) -> Result<ExitCode, String> {
    let bound = status_bound(config);
    let waited = || format!("no answer within {}", humantime::format_duration(bound));
    let ready =
        match tokio::time::timeout(bound, Configured::open(&Config::from(config.clone()))).await {
            Ok(Ok(ready)) => ready,
            Ok(Err(error @ SetupError::Store { .. })) => {
                return unopened(config, &crate::one_line(&error));
            }
            Ok(Err(error)) => return Err(crate::one_line(&error)),
            Err(_) => {
                return unopened(
                    config,
                    &format!("cannot open the token store: {}", waited()),
                );
            }
        };
    let manager = ready.manager();
    outln!("credential: {}", manager.name())?;
    outln!("key:        {}", manager.store_key())?;
    outln!("store:      {}", manager.store_description())?;
    // A store that does not answer is reported, not a reason to stop: health says what it means.
    let mut unread = false;
    match tokio::time::timeout(bound, manager.stored()).await {
        Ok(Ok(None)) => outln!("token:      none stored")?,
        Ok(Ok(Some(record))) => print_record(&record)?,
        Ok(Err(error)) => {
            unread = true;
            outln!("token:      unknown: {}", crate::one_line(&error))?;
        }
        Err(_) => {
            unread = true;
            outln!("token:      unknown: {}", waited())?;
        }
    }
    match tokio::time::timeout(bound, manager.lease()).await {
        Ok(Ok(None)) => outln!("lease:      never taken")?,
        Ok(Ok(Some(lease))) => {
            let state = if lease.is_held() { "held" } else { "free" };
            outln!("lease:      {state}, last taken by {}", lease.holder)?;
            outln!("lease from: {}", time(lease.acquired_at_ms))?;
            outln!("lease until:{:>25}", time(lease.expires_at_ms))?;
        }
        Ok(Err(error)) => {
            unread = true;
            outln!("lease:      unknown: {}", crate::one_line(&error))?;
        }
        Err(_) => {
            unread = true;
            outln!("lease:      unknown: {}", waited())?;
        }
    }
    // This process's view: what it did (these reads) and how it stands after them.
    let health = manager.health();
    outln!("health:     {health}")?;
    outln!("stats:      {}", manager.stats())?;
    Ok(
        if unread || !matches!(health, paynet_auth::token::Health::Ready) {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// `token status` of a store that could not be opened: what the configuration says, and why nothing more.
fn unopened(config: &PaynetConfig, cause: &str) -> Result<ExitCode, String> {
    // The key and name as a manager derives them, from a manager over no store.
    let offline =
        Configured::with_store(&Config::from(config.clone()), Arc::new(MemoryStore::new()))
            .map_err(|e| crate::one_line(&e))?;
    let manager = offline.manager();
    outln!("credential: {}", manager.name())?;
    outln!("key:        {}", manager.store_key())?;
    outln!("store:      {}", redact::url(&config.store.url))?;
    outln!("token:      unknown: {cause}")?;
    outln!("lease:      unknown: the store could not be opened")?;
    Ok(ExitCode::FAILURE)
}

/// Logs in now and stores the new token; fails when it could not be stored, which the manager itself works
/// around (it serves such a token from memory), since the point of this command is the stored token.
async fn refresh(config: &PaynetConfig) -> Result<ExitCode, String> {
    let mut signals = Signals::install()?;
    let ready = stack::configured(config).await?;
    let manager = ready.manager();
    let login = LoginSender::from_service(stack::client(config)?);
    let token = tokio::select! {
        biased;
        signal = signals.caught() => return Ok(interrupt::stop(signal, manager).await),
        token = manager.force_refresh(login) => token.map_err(|e| crate::one_line(&e))?,
    };
    let generation = token.generation();
    let unsaved = |what: String| {
        Err(format!(
            "logged in (generation {}, fingerprint {}), but the new token was not saved: {what}",
            generation,
            token.record().fingerprint()
        ))
    };
    // Read back: the store holds this generation, or a newer one another instance saved since.
    let bound = status_bound(config);
    match tokio::time::timeout(bound, manager.stored()).await {
        Ok(Ok(Some(stored))) if stored.generation >= generation => {}
        Ok(Ok(stored)) => {
            let holds = match stored {
                Some(stored) => format!("the store still holds generation {}", stored.generation),
                None => "the store holds no token".to_owned(),
            };
            return unsaved(format!(
                "{holds} (the store's error is logged above, unless RUST_LOG hides it)"
            ));
        }
        Ok(Err(error)) => {
            return unsaved(format!(
                "reading it back failed: {}",
                crate::one_line(&error)
            ));
        }
        Err(_) => {
            return unsaved(format!(
                "reading it back got no answer within {}",
                humantime::format_duration(bound)
            ));
        }
    }
    outln!("refreshed:  generation {}", token.generation())?;
    print_record(token.record())?;
    Ok(ExitCode::SUCCESS)
}

fn print_record(record: &TokenRecord) -> Result<(), String> {
    outln!("generation: {}", record.generation)?;
    outln!("fingerprint:{:>9}", record.fingerprint())?;
    outln!("obtained:   {}", time(record.obtained_at_ms))?;
    match record.expires_at_ms {
        Some(at) => outln!("expires:    {}", time(at))?,
        None => outln!("expires:    when the gateway rejects it")?,
    }
    outln!("written by: {}", record.written_by)?;
    if let Some(login) = &record.meta.user_login {
        outln!("user login: {login}")?;
    }
    Ok(())
}

/// An instant as RFC 3339. A row written before lifetimes were bounded at load may hold one past the year 9999,
/// which RFC 3339 cannot write (humantime panics on it): such a row is shown in milliseconds instead.
fn time(ms: i64) -> String {
    const YEAR_10000_MS: i64 = 253_402_300_800_000;
    if !(0..YEAR_10000_MS).contains(&ms) {
        return format!("{ms} ms since 1970 (not a date RFC 3339 can write)");
    }
    let at = UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs());
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
        // Names the store, password hidden, whatever failed: a URL the store refused as well as one it could not
        // reach.
        let failed = |source| {
            crate::one_line(&SetupError::Store {
                url: redact::url(&credential.store.url),
                source,
            })
        };
        if is_redis(&credential.store.url) {
            // Opening a Redis store contacts nobody; its `migrate` is what checks that Redis answers.
            let store = paynet_auth::store::RedisStore::connect(
                &credential.store.url,
                credential.store_options(),
            )
            .await
            .map_err(failed)?;
            store.migrate().await.map_err(failed)?;
            outln!(
                "nothing to create in {}: a Redis store keeps its keys without a schema",
                store.describe()
            )?;
        } else {
            let store =
                paynet_auth::store::connect(&credential.store.url, credential.store_options())
                    .await
                    .map_err(failed)?;
            outln!("migrations applied to {}", store.describe())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a store URL names Redis, which has no tables to create.
fn is_redis(url: &str) -> bool {
    url.trim().split_once("://").is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("redis") || scheme.eq_ignore_ascii_case("rediss")
    })
}

#[cfg(test)]
mod tests {
    use super::time;

    #[test]
    fn instants_past_the_year_9999_are_shown_without_panicking() {
        assert_eq!(time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert!(time(253_402_300_800_000).starts_with("253402300800000 ms"));
        assert!(time(i64::MAX).contains("ms since 1970"));
        assert!(time(-1).contains("ms since 1970"));
    }
}
