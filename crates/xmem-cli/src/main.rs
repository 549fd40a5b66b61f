//! `xmem`: see, clean up and try out xmem's shared-memory objects.

/// `println!` that returns the write's error instead of panicking: `xmem ls | head` must end
/// quietly when the reader goes, and a producer must still clean up its stream.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)
    }};
}

/// `print!` that returns the write's error (see [`outln`]).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($t)*)
    }};
}

mod cmd;
mod fmt;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "xmem",
    version,
    about = "Zero-copy shared-memory tensors and frames between processes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables for people.
    Text,
    /// JSON for programs.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// List xmem objects: kind, owner, whether it lives, size, buffers in use.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show one object: header, configuration, processes, and each buffer's state and holders.
    Inspect {
        /// The object's name (as `xmem ls` shows it).
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Return dead processes' references and remove objects no live process uses.
    Clean {
        /// Say what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also remove damaged files (`xmem.*` files that are not valid xmem objects).
        #[arg(long)]
        damaged: bool,
        /// Remove an orphan only once it has been one this long (`0s`, `10s`, `5m`).
        #[arg(long, default_value = "0s", value_parser = cmd::demo::parse_duration)]
        grace: std::time::Duration,
    },
    /// Print objects being created and removed, and owners dying, as it happens.
    Watch {
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this long (`10s`, `1m`).
        #[arg(long, value_parser = cmd::demo::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Print every object's counters once: pools, streams, segments (for scripts and scrapers).
    Stat {
        /// Output format.
        #[arg(long, value_enum, default_value_t = cmd::stat::StatFormat::Text)]
        format: cmd::stat::StatFormat,
    },
    /// A live view of every object, redrawn in place with rates (q quits).
    Top {
        /// Time between refreshes (`1s`, `250ms`).
        #[arg(long, default_value = "1s", value_parser = cmd::demo::parse_duration)]
        interval: std::time::Duration,
    },
    /// Run a publisher process and subscriber processes streaming 1080p frames.
    Demo(cmd::demo::DemoArgs),
    /// (internal) A demo consumer process.
    #[command(hide = true)]
    DemoConsumer(cmd::demo::ConsumerArgs),
    /// Publish sample frames on a stream (frame n filled with byte n % 256).
    Produce(cmd::produce::ProduceArgs),
    /// Receive a stream's frames, check every byte, print rates and latency.
    Consume(cmd::produce::ConsumeArgs),
    /// The SHM Tensor Pool protocol: decode messages, inspect regions, produce and consume.
    Tp {
        #[command(subcommand)]
        command: cmd::tp::TpCommand,
    },
    /// Benchmark streams against iceoryx2 and Unix sockets in one run; prints tables of ratios.
    Bench(cmd::bench::BenchArgs),
    /// Print a shell's completion script (`source <(xmem completions bash)`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// (internal) The benchmark's second process.
    #[command(hide = true)]
    BenchPeer {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XMEM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ls { format } => cmd::ls::run(format),
        Command::Inspect { name, format } => cmd::inspect::run(&name, format),
        Command::Clean {
            dry_run,
            damaged,
            grace,
        } => cmd::clean::run(dry_run, damaged, grace),
        Command::Watch { count, duration } => cmd::watch::run(count, duration),
        Command::Stat { format } => cmd::stat::stat(format),
        Command::Top { interval } => cmd::stat::top(interval),
        Command::Demo(args) => cmd::demo::run(args),
        Command::DemoConsumer(args) => cmd::demo::consumer(args),
        Command::Produce(args) => cmd::produce::produce(args),
        Command::Consume(args) => cmd::produce::consume(args),
        Command::Tp { command } => cmd::tp::run(command),
        Command::Bench(args) => cmd::bench::run(args),
        Command::BenchPeer { args } => cmd::bench::peer(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "xmem", &mut std::io::stdout());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`xmem ls | head`): not an error of ours.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xmem: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// What failed and why in one line: the error and its causes, each cause left out when the text
/// before it already says it (xmem's errors name their OS cause in their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}
