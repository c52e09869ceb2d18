//! The cluster backend: each room's bus is a Redis Stream that every node reading the
//! room reads back in its one order ([`RedisBuses`]); presence is kept by Lua scripts, so
//! each change to a room's list and its announcement are one atomic step
//! ([`RedisPresence`]); legacy session records are `session:{sid}` hashes their node keeps
//! alive ([`RedisSessions`]). [`keys`] says where everything lives.

mod bus;
mod durability;
pub mod keys;
mod link;
mod moderation;
mod presence;
mod sessions;
mod under_way;

pub use bus::{RedisBus, RedisBuses, bus_script};
pub use durability::{Durability, Replication};
pub use link::{ClusterTarget, RedisConn, RedisLink, RedisTarget, SentinelTarget};
pub use moderation::RedisModeration;
pub use presence::{LiveList, PresenceTimings, RedisPresence};
pub use sessions::{RedisSessions, session_key};
