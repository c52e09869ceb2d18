//! The chatroom node: configuration, the chat service and its state backends, the
//! Socket.IO handlers, the axum application that serves page and socket together, and
//! the status page for operators.

pub mod addresses;
pub mod admin;
pub mod auth;
pub mod backend;
pub mod backlog;
pub mod chat;
pub mod clock;
pub mod configuration;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod moderation;
pub mod moderation_view;
pub mod names;
pub mod realtime;
pub mod request_head;
pub mod security;
pub mod serve;
pub mod startup;
pub mod status;
pub mod telemetry;
pub mod tls;
