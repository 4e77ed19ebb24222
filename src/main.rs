#![forbid(unsafe_code)]
// No function of src/ over 80 lines (threshold in clippy.toml; an error under `-D warnings`).
#![warn(clippy::too_many_lines)]

use clap::Parser;

// No future is polled here (`cli::run_blocking` builds the runtime): see there why.
fn main() {
    let cli = secure_qdrant_operator::cli::Cli::parse();
    std::process::exit(secure_qdrant_operator::cli::run_blocking(cli));
}
