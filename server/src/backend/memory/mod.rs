//! The single-node backend: everything in this process, modelling what the Redis
//! backend does (stream-like positions, trimming, presence announced with each change),
//! so that one node behaves as one node of a cluster would.

mod bus;
mod moderation;
mod presence;
mod sessions;

pub use bus::{MemoryBus, MemoryBuses};
pub use moderation::{MemoryModeration, ORDERS_WAITING};
pub use presence::MemoryPresence;
pub use sessions::MemorySessions;
