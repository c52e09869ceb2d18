//! The cluster backend: each room's bus is a Redis Stream that every node reading the
//! room reads back in its one order ([`RedisBuses`]); presence is kept by Lua scripts, so
//! each change to a room's list and its announcement are one atomic step
//! ([`RedisPresence`]); legacy session records are `session:{sid}` hashes their node keeps
//! alive ([`RedisSessions`]). [`keys`] says where everything lives.

mod bus;
pub mod keys;
mod moderation;
mod presence;
mod sessions;

pub use bus::{RedisBus, RedisBuses, bus_script};
pub use moderation::RedisModeration;
pub use presence::{PresenceTimings, RedisPresence};
pub use sessions::{RedisSessions, session_key};

use super::BackendError;
use redis::Client;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// Connects to Redis with timeouts short enough that an outage is noticed in seconds.
pub async fn connect(client: &Client, response_timeout: Duration) -> Result<ConnectionManager, BackendError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(1));
    Ok(client.get_connection_manager_with_config(config).await?)
}
