//! One module per subcommand.

pub mod client;
pub mod completions;
pub mod send;
pub mod serve;
pub mod services;
