//! The operator binary: flags and environment in, the controller until SIGTERM.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_operator::cli::run().await
}
