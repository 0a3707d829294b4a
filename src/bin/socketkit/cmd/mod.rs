//! One module per subcommand.

pub mod send;
pub mod serve;
