//! The one wall clock of the node: room positions and history ages are milliseconds
//! since the Unix epoch, as in a Redis stream id.

/// Milliseconds since the Unix epoch (0 if the system clock is set before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
