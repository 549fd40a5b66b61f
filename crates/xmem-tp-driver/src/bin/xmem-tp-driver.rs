//! `xmem-tp-driver CONFIG.toml [--print-config]`: the tensor-pool driver as a daemon of its own,
//! used as tensor_pool_c's `tp_driver CONFIG` is. It connects to the media driver of
//! `driver.aeron_dir` (or `AERON_DIR`, or Aeron's default); SIGINT or SIGTERM shut it down
//! gracefully. `xmem tp driver --config` is the same with an embedded media driver on offer.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use xmem_tp_driver::DriverConfig;

fn main() -> ExitCode {
    tracing_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: xmem-tp-driver CONFIG.toml [--print-config]");
        return ExitCode::from(2);
    };
    let config = match DriverConfig::load(std::path::Path::new(path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xmem-tp-driver: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.iter().any(|a| a == "--print-config") {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("xmem-tp-driver: error: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let dir = (!config.driver.aeron_dir.is_empty()).then(|| config.driver.aeron_dir.clone().into());
    let client = match xmem_aeron::Client::connect(&xmem_aeron::ClientOptions {
        dir,
        ..Default::default()
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xmem-tp-driver: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let driver = match xmem_tp_driver::Driver::new(&client, config) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("xmem-tp-driver: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Tests and scripts wait for this line before attaching.
    println!("ready");
    match xmem_tp_driver::run(driver, &stop) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xmem-tp-driver: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `XMEM_LOG` (or `RUST_LOG`) level, `info` by default.
fn tracing_init() {
    let level = std::env::var("XMEM_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let level = match level.to_ascii_lowercase().as_str() {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .init();
}
