//! `xmem bench`: streams against their peers (iceoryx2 with the `peers` feature, Unix sockets),
//! two processes pinned to different cores, all in one run; prints Markdown tables of figures and
//! ratios. The second process is this same binary (`xmem bench-peer …`).

use std::time::Duration;

use anyhow::{bail, Result};
use xmem_bench::segment::Clock;
use xmem_bench::streams::{report, Plan, Transport};
use xmem_bench::PeerProgram;

#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// Run only `latency` or `throughput`.
    #[arg(long)]
    only: Option<String>,
    /// Transports to run, comma-separated (`xmem,iceoryx2,unix-socket`; default all built).
    #[arg(long)]
    transports: Option<String>,
    /// Scales every iteration count (1: about a minute in all).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
}

pub(crate) fn run(args: BenchArgs) -> Result<()> {
    let mut plan = Plan::from_env();
    match args.only.as_deref() {
        None => {}
        Some("latency") => plan.throughput = false,
        Some("throughput") => plan.latency = false,
        Some(other) => bail!("--only takes latency or throughput, not {other:?}"),
    }
    if let Some(list) = args.transports {
        let mut chosen = Vec::new();
        for word in list.split(',') {
            let Some(t) = Transport::ALL.iter().find(|t| t.name() == word) else {
                bail!("unknown transport {word:?}: use xmem, iceoryx2 or unix-socket");
            };
            if !t.available() {
                bail!("{word} is not built in: rebuild with `--features peers`");
            }
            chosen.push(*t);
        }
        plan.transports = chosen;
    }
    if !(args.scale > 0.0 && args.scale <= 100.0) {
        bail!("--scale must be above 0 and at most 100");
    }
    plan.scale = args.scale;
    if !Transport::Iceoryx2.available() {
        outln!("(iceoryx2 left out: build with `--features peers` to compare with it)")?;
    }
    let program = PeerProgram {
        program: std::env::current_exe()?,
        prefix: vec!["bench-peer".into()],
    };
    let clock = Clock::calibrate(Duration::from_millis(200));
    report(&program, &plan, &clock);
    Ok(())
}

/// `xmem bench-peer ROLE …`: the benchmark's second process.
pub(crate) fn peer(args: Vec<String>) -> Result<()> {
    let code = xmem_bench::peer_main(&args);
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
