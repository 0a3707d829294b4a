//! socketkit's integration tests: one binary, so tokio and the library are linked once.
//! Real sockets on loopback, ephemeral ports, events rather than sleeps.

mod common;

mod abstract_names;
mod bench;
mod broadcast;
mod cli;
mod client;
mod datagrams;
mod drain;
mod engines;
mod epoll_baseline;
mod examples;
mod framing;
mod handlers;
mod hardening;
mod interop;
mod layers;
mod memory;
mod multicast;
mod names;
mod netns;
mod ping;
mod resources;
mod seqpacket;
mod services;
#[cfg(feature = "tls")]
mod tls;
mod unicode;
