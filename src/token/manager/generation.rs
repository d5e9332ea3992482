//! How a new token is numbered: after the stored generation under the lease, from time and the owner's salt
//! without the store. Generations order tokens across the fleet; see [`Numbering`].

use std::time::Duration;

use super::Inner;
use crate::record::Generation;

/// How a new token is numbered.
///
/// Generations must be unique across the fleet (a waiter adopts, and a rejection invalidates, by generation) and
/// monotone: a later token gets a higher number, across `token clear` and across logins made while the store was
/// unreachable.
///
/// - Under the lease, with the stored generation known, a token is numbered right after it. That is unique: one
///   holder at a time writes, and the store refuses a generation that is not newer than its row. A cleared row
///   stays as a tombstone that keeps its generation ([`TokenStore::clear`]), so numbering never restarts.
/// - Without the store (it is unreachable, or could not be read under the lease), nothing orders two instances.
///   The number then comes from time: the clock's milliseconds shifted left by [`SALT_BITS`], with that many low
///   bits of the injected randomness mixed with a hash of the owner's name, and never below the newest
///   generation this instance knows plus one (when this clock is behind that generation, the millisecond after
///   it, with the same low bits). Two instances logging in during one outage collide only in the same
///   millisecond *and* with the same 20 bits; the later login gets the higher number, which is the token a
///   single-session gateway keeps alive, so the store converges on it when it returns; and the number is far
///   above any sequential one handed out before (those count logins; these count milliseconds times 2^20).
///
/// - Under the lease after an outage (the newest generation known is itself a timed one, at or above
///   [`TIMED_FLOOR`]), a token is numbered by time as well, never below the stored generation plus one. The instance
///   knows only its own logins of the outage; another may have logged in later, with a higher timed number. Counted
///   from its own, the first login after the store's return would be numbered below that one, and the other
///   instance (its token ended by this login on a single-session gateway) could not adopt it: it would log in once
///   more, and so on up the fleet. Numbered by time, the login after the return is above every login before it.
///
/// Time alone is not used under the lease, so that an instance whose clock runs behind still numbers after the
/// stored row; counting alone is not used without the store, since two instances that knew the same row would
/// pick the same next number.
///
/// [`TokenStore::clear`]: crate::store::TokenStore::clear
#[derive(Debug, Clone, Copy)]
pub(super) enum Numbering {
    AfterStored,
    Unordered,
}

/// Low bits of an unordered generation that tell instances apart within one millisecond.
const SALT_BITS: u32 = 20;
const SALT_MASK: u64 = (1 << SALT_BITS) - 1;
/// Keeps `ms << SALT_BITS` within a `BIGINT` column (until the year 2248).
const MAX_TIMED_MS: u64 = (i64::MAX as u64) >> SALT_BITS;
/// The lowest timed generation of a clock past 1970-01-01 00:17 UTC; a count of logins stays below it (2^40 logins,
/// one a second for 34,000 years). Generations at or above it come from time: the fleet logged in without the store
/// at least once, and numbering never goes back (not even across `token clear`).
const TIMED_FLOOR: u64 = 1 << 40;

pub(super) fn owner_salt(owner: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(owner.as_bytes());
    u64::from_le_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

impl Inner {
    /// The generation of a token this instance just obtained; see [`Numbering`].
    pub(super) fn next_generation(
        &self,
        newest: Option<Generation>,
        numbering: Numbering,
    ) -> Generation {
        let after = newest.map_or(0, |g| g.0).saturating_add(1);
        match numbering {
            Numbering::AfterStored if after <= TIMED_FLOOR => Generation(after),
            Numbering::AfterStored | Numbering::Unordered => Generation(self.timed_after(after)),
        }
    }

    /// A generation from the clock, at least `after`: the clock's milliseconds shifted left by [`SALT_BITS`], the
    /// low bits from the injected randomness and the owner's salt. When this clock is behind `after` (the newest
    /// generation known came from a clock that runs ahead), the millisecond after `after`'s, with the same salt:
    /// plain `after` would give every instance behind that clock the same number for different tokens.
    fn timed_after(&self, after: u64) -> u64 {
        let ms = u64::try_from(self.now_ms()).unwrap_or(0);
        let random = u64::try_from(
            self.jitter
                .jitter(Duration::from_micros(SALT_MASK))
                .as_micros(),
        )
        .unwrap_or(0);
        let salt = (random ^ self.owner_salt) & SALT_MASK;
        let timed = ms.min(MAX_TIMED_MS) << SALT_BITS | salt;
        if timed >= after {
            return timed;
        }
        let next_ms = ((after >> SALT_BITS) + 1).min(MAX_TIMED_MS);
        // Past the last millisecond a `BIGINT` holds, only `after` itself is left.
        (next_ms << SALT_BITS | salt).max(after)
    }
}
