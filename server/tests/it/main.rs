//! The integration tests, one binary: real nodes (in this process, or the binary under
//! test as a child process), real Redis and nginx processes, and the official JS and
//! Python Socket.IO clients, all on loopback.
//!
//! - `contract`: the legacy event contract, client by client and transport by transport;
//! - `resume`: history and gap-free resume of the structured protocol;
//! - `presence`: who is online, grace periods, tabs of one user, unique names;
//! - `rooms`: version 2's rooms, on one node and across nodes;
//! - `older`: reading a room's older lines back;
//! - `cluster`: many nodes on one Redis, and Redis or a node failing;
//! - `faults`: Redis losing its data, stalling, or a node taken for dead by mistake;
//! - `failover`: Redis Sentinel promoting a replica under the nodes;
//! - `load_balancer`: nodes behind nginx;
//! - `hostile`: clients that mean harm or misbehave;
//! - `moderation`: operators deleting, muting, banning and forgetting, and retention;
//! - `auth`: connection tokens, the access policies and private rooms;
//! - `health`, `drain`, `limits`, `node`, `tls`: operating a node (and its status page).
#![allow(clippy::unwrap_used)] // a panic in a test is its failure report

mod support;

mod auth;
mod cluster;
mod contract;
mod drain;
mod failover;
mod faults;
mod health;
mod hostile;
mod limits;
mod load_balancer;
mod moderation;
mod node;
mod older;
mod presence;
mod resume;
mod rooms;
mod tls;
