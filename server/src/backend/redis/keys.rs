//! Where everything lives in Redis. Every key of a room carries the room in a hash tag
//! (`chatroom:{room:NAME}:…`), so a room's keys share one Redis Cluster slot and rooms
//! spread over the shards; the users, their names and the nodes' beats are global keys
//! with one hash tag of their own (`chatroom:{global}:…`).

use app::protocol::RoomName;

/// The channel on which every append names its room, so that nodes reading the room
/// read its stream again.
pub const WAKE_CHANNEL: &str = "chatroom:wake";

/// The prefix of every global key.
const GLOBAL: &str = "chatroom:{global}:";

/// The global keys, in the order `global.lua` takes them as `KEYS`.
pub fn global_keys() -> [String; 14] {
    [
        "users",
        "folds",
        "names",
        "versions",
        "conns",
        "counts",
        "rooms",
        "grace",
        "nodes",
        "steady",
        "nodeinfo",
        "roomgrace",
        "roomlist",
        "roomcounts",
    ]
    .map(|name| format!("{GLOBAL}{name}"))
}

/// Hash: sanction key (`mute|user:…`, `ban|address:…`) → the sanction's JSON.
pub const SANCTIONS_KEY: &str = "chatroom:{global}:sanctions";

/// Set: the users operators added to private rooms, as `room|user`.
pub const MEMBERS_KEY: &str = "chatroom:{global}:members";

/// Stream: the operators' actions, newest kept.
pub const AUDIT_KEY: &str = "chatroom:{global}:audit";

/// The channel on which orders to every node travel (close a user's connections, read
/// the sanctions again).
pub const ORDERS_CHANNEL: &str = "chatroom:orders";

/// Hash: node → its last published status (JSON), for the status page. Not a script key.
pub fn status_key() -> String {
    format!("{GLOBAL}status")
}

/// The keys of one room, in the order its scripts take them as `KEYS`.
#[derive(Debug, Clone)]
pub struct RoomKeys {
    /// The stream of its events.
    pub stream: String,
    /// The id where the stream's current epoch began.
    pub epoch: String,
    /// Hash: connection id → "node|user" of every connection in the room.
    pub conns: String,
    /// Hash: user → how many of its connections are in the room.
    pub counts: String,
    /// Hash: user → the name the room knows it by.
    pub members: String,
    /// Hash: user → the version of that name (newer names win).
    pub versions: String,
    /// Sorted set: user → when it leaves the room unless it comes back (ms).
    pub grace: String,
}

impl RoomKeys {
    /// The keys of `room`.
    pub fn of(room: &RoomName) -> Self {
        let key = |name: &str| format!("chatroom:{{room:{room}}}:{name}");
        Self {
            stream: key("events"),
            epoch: key("epoch"),
            conns: key("conns"),
            counts: key("counts"),
            members: key("members"),
            versions: key("versions"),
            grace: key("grace"),
        }
    }

    /// All of them, in script order.
    pub fn all(&self) -> [&str; 7] {
        [&self.stream, &self.epoch, &self.conns, &self.counts, &self.members, &self.versions, &self.grace]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key Redis Cluster hashes: what is between the first `{` and the
    /// next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        &key[open + 1..close]
    }

    #[test]
    fn a_rooms_keys_share_one_slot_and_other_rooms_do_not() {
        let ops = RoomKeys::of(&RoomName::parse("ops").unwrap());
        assert!(ops.all().iter().all(|key| hash_tag(key) == "room:ops"), "{ops:?}");
        let lobby = RoomKeys::of(&RoomName::lobby());
        assert_eq!(hash_tag(&lobby.stream), "room:lobby");
        assert!(global_keys().iter().all(|key| hash_tag(key) == "global"));
    }
}
