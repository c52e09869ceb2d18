//! Properties of what the server and the browser read from the wire: whatever arrives,
//! decoding answers (a value or an error) and never panics, and what parses keeps the
//! rules it promises.
#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

use app::protocol::codec::decode;
use app::protocol::session::ClientSession;
use app::protocol::{ClientAuth, ClientEvent, MAX_NAME_CHARS, MessageText, Position, Presented, Username};
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON, nested a few levels.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::hash_map("[a-z]{1,5}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_frame_decodes_or_is_refused(frame in ".{0,200}") {
        let _ = decode(&frame);
        let mut session = ClientSession::new();
        let _ = session.on_frame(&frame);
    }

    #[test]
    fn any_socket_io_looking_frame_decodes_or_is_refused(kind in "[0-9]{1,2}", body in json()) {
        let _ = decode(&format!("{kind}{body}"));
    }

    #[test]
    fn any_connect_auth_parses_or_is_refused(auth in json()) {
        if let Ok(parsed) = serde_json::from_value::<ClientAuth>(auth) {
            // What parsed writes back to what parses the same.
            let again: ClientAuth = serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
            prop_assert_eq!(again, parsed);
        }
    }

    #[test]
    fn a_presented_position_is_either_a_position_or_the_text_as_sent(raw in ".{0,30}") {
        match Presented::<Position>::from(raw.as_str()) {
            Presented::Valid(position) => prop_assert_eq!(position.to_string().parse::<Position>().unwrap(), position),
            Presented::Invalid(text) => prop_assert_eq!(text, raw),
        }
    }

    #[test]
    fn an_accepted_name_is_trimmed_short_and_free_of_control_characters(raw in "\\PC{0,40}|.{0,40}") {
        if let Ok(name) = Username::parse(&raw) {
            let name = name.as_str();
            prop_assert_eq!(name, name.trim());
            prop_assert!(!name.is_empty() && name.chars().count() <= MAX_NAME_CHARS);
            prop_assert!(!name.chars().any(char::is_control));
        }
    }

    #[test]
    fn an_accepted_line_is_kept_exactly(raw in ".{0,50}", max in 1usize..40) {
        if let Ok(text) = MessageText::parse(&raw, max) {
            prop_assert_eq!(text.as_str(), raw.as_str());
            prop_assert!(raw.chars().count() <= max && !raw.trim().is_empty());
        }
    }

    #[test]
    fn any_client_event_array_parses_or_is_refused(event in json()) {
        let _ = serde_json::from_value::<ClientEvent>(event);
    }
}
