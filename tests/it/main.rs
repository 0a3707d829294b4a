//! socketkit's integration tests: one binary, so tokio and the library are linked once.
//! Real sockets on loopback, ephemeral ports, events rather than sleeps.

mod common;

mod abstract_names;
mod balancer;
mod bench;
mod bench_script;
mod bench_uring;
mod broadcast;
mod cli;
mod client;
mod datagrams;
mod drain;
mod engines;
mod epoll_baseline;
mod examples;
mod exec;
mod framing;
mod handlers;
mod hardening;
mod interop;
mod layers;
mod listen;
mod memory;
#[cfg(feature = "metrics")]
mod metrics;
mod multicast;
mod names;
mod netns;
mod operations;
mod ping;
#[cfg(feature = "proxy")]
mod proxy_protocol;
mod relay;
#[cfg(all(feature = "hdr-log", feature = "plot"))]
mod report;
mod resources;
mod seqpacket;
mod services;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tls")]
mod tls_adopters;
mod unicode;
mod uring;
