#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = secure_qdrant_operator::cli::Cli::parse();
    std::process::exit(secure_qdrant_operator::cli::main(cli).await);
}
