//! One module per subcommand.

pub mod addr;
pub mod bench;
pub mod client;
pub mod completions;
pub mod listen;
pub mod ping;
pub mod port;
pub mod relay;
pub mod report;
pub mod resolve;
pub mod send;
pub mod serve;
pub mod services;
pub mod tls;
