//! `xmem bench`: streams against their peers (iceoryx2 with the `peers` feature, Unix sockets),
//! two processes pinned to different cores, all in one run; prints Markdown tables of figures and
//! ratios. The second process is this same binary (`xmem bench-peer …`).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use xmem_bench::segment::Clock;
use xmem_bench::streams::{report, Plan, Run, Transport};
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
    /// Also write the run's figures, with the machine and the peers, as JSON to this file
    /// (what `scripts/bench-plots` draws).
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
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
    let run = report(&program, &plan, &clock);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&run_json(&run, &plan))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        outln!("\nwrote {}", path.display())?;
    }
    Ok(())
}

/// The machine a run was made on: what a figure means depends on it.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, m)| m.trim().to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpu": model,
        // From /proc/cpuinfo: the run pins this process, so its own affinity says 1.
        "logical_cpus": cpuinfo.lines().filter(|l| l.starts_with("processor")).count(),
        "kernel": kernel.trim(),
    })
}

fn run_json(run: &Run, plan: &Plan) -> Value {
    json!({
        "benchmark": "xmem bench: streams between two processes",
        "date": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "xmem": env!("CARGO_PKG_VERSION"),
        "machine": machine(),
        "pinned_cpus": [run.cpus.0, run.cpus.1],
        "scale": plan.scale,
        "transports": run.transports,
        "latency_ns": run.latency.iter().map(|r| json!({
            "message": r.message,
            "bytes": r.bytes,
            "results": r.results.iter().zip(&run.transports).map(|(p, t)| json!({
                "transport": t,
                "p50": p.map(|p| p.p50), "p99": p.map(|p| p.p99), "p999": p.map(|p| p.p999),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "throughput_per_s": run.throughput.iter().map(|r| json!({
            "message": r.message,
            "bytes": r.bytes,
            "rates": r.rates.iter().zip(&run.transports).map(|(v, t)| json!({
                "transport": t, "messages_per_s": v,
            })).collect::<Vec<_>>(),
            "memset_bound_per_s": r.bound,
        })).collect::<Vec<_>>(),
        "hot_memset_per_s": run.hot_memset,
    })
}

/// `xmem bench-peer ROLE …`: the benchmark's second process.
pub(crate) fn peer(args: Vec<String>) -> Result<()> {
    let code = xmem_bench::peer_main(&args);
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
