//! `xmem-tp-discoveryd CONFIG.toml`: a standalone discovery provider, used as tensor_pool_c's
//! `tp_discoveryd CONFIG` is. It prints `ready` once it listens; SIGINT/SIGTERM stop it.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use xmem_tp_discovery::config::DiscoveryConfig;
use xmem_tp_discovery::{Provider, Registry};

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: xmem-tp-discoveryd CONFIG.toml");
        return ExitCode::from(2);
    };
    match run(std::path::Path::new(&path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xmem-tp-discoveryd: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> Result<(), String> {
    let config = DiscoveryConfig::load(path)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let dir = std::env::var("AERON_DIR").ok().filter(|d| !d.is_empty());
    let dir = (!config.driver.aeron_dir.is_empty())
        .then(|| config.driver.aeron_dir.clone())
        .or(dir);
    let client = xmem_aeron::Client::connect(&xmem_aeron::ClientOptions {
        dir: dir.map(Into::into),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let registry = Registry::new(config.announce_period(), config.discovery.max_results);
    let mut provider =
        Provider::new(&client, config.provider_options(), registry).map_err(|e| e.to_string())?;
    println!("ready");
    while !stop.load(Ordering::Relaxed) {
        client.check().map_err(|e| e.to_string())?;
        if provider.poll().map_err(|e| e.to_string())? == 0 {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    Ok(())
}
