//! The store's Lua scripts. Each runs atomically on the server (Redis runs one script at a time), so a check and
//! the write it guards cannot be split by another instance's command; each touches only the keys it is given,
//! which share a hash tag (one Redis Cluster slot). Times come from the server's `TIME`, never the callers' clocks,
//! so instances with skewed clocks agree on when a lease ends.

use std::sync::LazyLock;

use redis::Script;

/// The server's clock in epoch milliseconds, as a Lua local `now` (Redis 5+ replicates a script's effects, not the
/// script, so reading the clock before writing is allowed).
macro_rules! lua_now {
    () => {
        "local time = redis.call('TIME')\n\
         local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)\n"
    };
}

/// Writes a token unless the stored one (or a cleared one's tombstone) has the same or a newer generation, and
/// announces the write on the store's channel. KEYS[1]: the token hash. ARGV[1]: the generation; ARGV[2]: the
/// channel; ARGV[3]: the message (the store key); ARGV[4..]: the record's field, value pairs. Returns 1 if written.
pub(super) static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local stored = redis.call('HGET', KEYS[1], 'generation')
if stored then
  -- Generations are decimal integers without leading zeros: a longer one is larger, and between two of one
  -- length the text order is the numeric one. (Lua numbers are doubles, exact only up to 2^53.)
  local new = ARGV[1]
  if #stored > #new or (#stored == #new and stored >= new) then
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'generation', ARGV[1], unpack(ARGV, 4))
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
",
    )
});

/// Seals a token read under a previous key again under the current one, only if the hash still holds that exact
/// row (same generation, same nonce): a concurrent save of a newer token is never overwritten by it. KEYS[1]: the
/// token hash. ARGV: the generation, the nonce read, the new token and nonce. Returns 1 if written.
pub(super) static RESEAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'generation') == ARGV[1] and redis.call('HGET', KEYS[1], 'nonce') == ARGV[2] then
  redis.call('HSET', KEYS[1], 'token', ARGV[3], 'nonce', ARGV[4])
  return 1
end
return 0
",
    )
});

/// Keeps only the generation and an empty token (the tombstone), so that numbering goes on after a clear.
/// KEYS[1]: the token hash.
pub(super) static CLEAR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local generation = redis.call('HGET', KEYS[1], 'generation')
if generation then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'generation', generation, 'token', '')
end
return 0
",
    )
});

/// Takes the lease (`SET NX PX`), or extends it when `owner` holds it already (compare-and-expire: an owner whose
/// lease ran out and was taken by another gets nothing). Records what `lease()` reports in the lease-info hash,
/// which outlives the lease. KEYS[1]: the lease (value: its holder; TTL: the lease's); KEYS[2]: the lease-info
/// hash. ARGV[1]: the owner; ARGV[2]: the TTL in milliseconds. Returns 1 if `owner` holds the lease.
pub(super) static TRY_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_now!(),
        r"
local until_ms = string.format('%.0f', now + tonumber(ARGV[2]))
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('HSET', KEYS[2], 'holder', ARGV[1], 'acquired_at', string.format('%.0f', now), 'expires_at', until_ms)
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[2], 'holder', ARGV[1], 'acquired_at', string.format('%.0f', now), 'expires_at', until_ms)
  return 1
end
return 0
"
    ))
});

/// Gives the lease back only if `owner` still holds it (compare-and-delete: a late release by a holder whose lease
/// ran out never frees the next holder's), and records that it ended now. KEYS and ARGV[1] as for [`TRY_LEASE`].
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_now!(),
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'expires_at', string.format('%.0f', now))
  return 1
end
return 0
"
    ))
});

/// The last lease taken and the server's clock: holder, acquired_at, expires_at, now; or nil if none was ever
/// taken. KEYS[1]: the lease-info hash.
pub(super) static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        lua_now!(),
        r"
local info = redis.call('HMGET', KEYS[1], 'holder', 'acquired_at', 'expires_at')
if not info[1] then
  return false
end
return {info[1], info[2], info[3], string.format('%.0f', now)}
"
    ))
});
