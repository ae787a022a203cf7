//! Runs the simulator on its own until Ctrl-C, printing each exchange's endpoints:
//! `cargo run -p spreadagg-simulate --example serve [SEED]`.

use spreadagg_simulate::{SimConfig, Simulator};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seed = std::env::args().nth(1).map(|s| s.parse()).transpose()?;
    let stop = CancellationToken::new();
    let sim = Simulator::start(
        SimConfig {
            seed,
            ..SimConfig::default()
        },
        stop.clone(),
    )
    .await?;
    for e in sim.endpoints() {
        println!("{} ws={} rest={}", e.exchange, e.ws_url, e.rest_url);
    }
    println!("seed={}", sim.seed());
    tokio::signal::ctrl_c().await?;
    stop.cancel();
    sim.join().await;
    Ok(())
}
