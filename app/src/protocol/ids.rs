//! The identifiers that travel on the wire, parsed once where they enter: room positions
//! and client keys. Each serializes as the plain string it was read from.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// A room-wide position in the one order of room events, written like a Redis
/// stream id (`millis-seq`) so that both backends and the browser share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A position that is not `millis-seq`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("not a position (expected MILLIS-SEQ): {0:?}")]
pub struct BadPosition(String);

impl FromStr for Position {
    type Err = BadPosition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPosition(s.to_owned());
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(Position { ms: ms.parse().map_err(|_| bad())?, seq: seq.parse().map_err(|_| bad())? })
    }
}

/// A browser's random client key: connections with the same key are one user. 16 to 64
/// characters of `A-Z a-z 0-9 _ -`, so it is safe to store and to use in Redis keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey(String);

/// A client key that does not have the shape of one.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("not a client key (16 to 64 characters of A-Z a-z 0-9 _ -)")]
pub struct BadClientKey;

impl FromStr for ClientKey {
    type Err = BadClientKey;
    fn from_str(key: &str) -> Result<Self, Self::Err> {
        let plain = key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if (16..=64).contains(&key.len()) && plain { Ok(Self(key.to_owned())) } else { Err(BadClientKey) }
    }
}

impl ClientKey {
    /// A new key from 16 random bytes, written as 32 hex digits.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The key as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A value a client presented as a string: parsed when it parses, else kept as sent, so
/// that one bad field is answered on its own (a position the room cannot resume from, a
/// key that is ignored) instead of failing the whole payload around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented<T> {
    /// It parsed.
    Valid(T),
    /// It did not; the text as sent.
    Invalid(String),
}

impl<T> Presented<T> {
    /// The parsed value, if it parsed.
    pub fn valid(&self) -> Option<&T> {
        match self {
            Presented::Valid(value) => Some(value),
            Presented::Invalid(_) => None,
        }
    }
}

impl<T: FromStr> From<&str> for Presented<T> {
    fn from(raw: &str) -> Self {
        raw.parse().map_or_else(|_| Presented::Invalid(raw.to_owned()), Presented::Valid)
    }
}

impl<T: fmt::Display> Serialize for Presented<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Presented::Valid(value) => serializer.collect_str(value),
            Presented::Invalid(raw) => serializer.serialize_str(raw),
        }
    }
}

impl<'de, T: FromStr> Deserialize<'de> for Presented<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Ok(Presented::from(raw.as_str()))
    }
}

/// Serializes a [`Position`] as its `millis-seq` string (the wire form).
impl Serialize for Position {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_keys_are_long_and_plain() {
        assert!("0123456789abcdef".parse::<ClientKey>().is_ok());
        assert!("a_-Z".repeat(16).parse::<ClientKey>().is_ok());
        let random = ClientKey::from_random([0xab; 16]);
        assert_eq!(random.as_str().parse::<ClientKey>(), Ok(random.clone()));
        for bad in ["", "short", "0123456789abcde", "0123456789abcdef|x", "0123456789 abcdef", &"a".repeat(65)] {
            assert_eq!(bad.parse::<ClientKey>(), Err(BadClientKey), "{bad:?}");
        }
    }

    #[test]
    fn positions_print_parse_and_order_like_stream_ids() {
        let p: Position = "1700000000000-3".parse().unwrap();
        assert_eq!(p, Position { ms: 1_700_000_000_000, seq: 3 });
        assert_eq!(p.to_string(), "1700000000000-3");
        assert!(Position { ms: 1, seq: 9 } < Position { ms: 2, seq: 0 });
        for bad in ["", "12", "a-1", "1-", "-1", "1-2-3"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""1700000000000-3""#);
        assert_eq!(serde_json::from_str::<Position>(r#""5-1""#).unwrap(), Position { ms: 5, seq: 1 });
        assert!(serde_json::from_str::<Position>(r#""5""#).is_err());
    }

    #[test]
    fn presented_values_keep_what_did_not_parse() {
        let ok: Presented<Position> = serde_json::from_str(r#""5-1""#).unwrap();
        assert_eq!(ok, Presented::Valid(Position { ms: 5, seq: 1 }));
        let bad: Presented<Position> = serde_json::from_str(r#""yesterday""#).unwrap();
        assert_eq!(bad, Presented::Invalid("yesterday".into()));
        assert_eq!(bad.valid(), None);
        for value in [ok, bad] {
            let json = serde_json::to_string(&value).unwrap();
            assert_eq!(serde_json::from_str::<Presented<Position>>(&json).unwrap(), value);
        }
        assert!(serde_json::from_str::<Presented<Position>>("12").is_err(), "not a string at all");
    }
}
