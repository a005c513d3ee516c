//! The `opentrunk` binary: the operator's command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// jemalloc, not glibc's malloc: a call's objects live from milliseconds (its messages) to
/// 64*T1 (its lingering transactions), and glibc spent a fifth of the switch's CPU splitting and
/// merging the holes that mix leaves (`_int_malloc`, `unlink_chunk`, `malloc_consolidate`);
/// jemalloc's size classes have no such work. Measured in docs/performance.md (fourth round).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod calls;
mod cluster;
mod config;
mod metrics;
mod records;
mod registrations;
mod serve;
mod sip_cli;

#[derive(Parser)]
#[command(name = "opentrunk", version, about = "Self-hostable elastic SIP trunking")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the switch: SIP listeners and the API.
    ///
    /// Configuration comes from `--config FILE` (TOML) and these environment variables, which
    /// win: OPENTRUNK_SIP_LISTEN (comma list of udp:IP:PORT, tcp:IP:PORT, tls:IP:PORT),
    /// OPENTRUNK_API_LISTEN, OPENTRUNK_DATABASE_URL, OPENTRUNK_REDIS_URL,
    /// OPENTRUNK_ADMIN_API_KEY, OPENTRUNK_TLS_CERT, OPENTRUNK_TLS_KEY, OPENTRUNK_LOG_FORMAT
    /// (text or json), OPENTRUNK_LOG (a tracing filter such as `info`).
    Serve {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Log as JSON lines instead of human-readable text.
        #[arg(long)]
        json_logs: bool,
    },
    /// SIP message tools.
    Sip {
        #[command(subcommand)]
        command: SipCommand,
    },
}

#[derive(Subcommand)]
enum SipCommand {
    /// Parse captured SIP messages (one per file, as a UDP datagram) and show what the switch
    /// makes of each: the message as JSON, or `FILE: REJECT <code> <reason>`.
    Parse {
        #[arg(required = true)]
        files: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve { config, json_logs } => {
            let config = match config::Config::load(config.as_deref(), |k| std::env::var(k).ok()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("opentrunk: configuration: {e}");
                    std::process::exit(2);
                }
            };
            init_logging(&config.log.level, json_logs || config.log.format == "json");
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("opentrunk: runtime: {e}");
                    std::process::exit(1);
                }
            };
            rt.block_on(serve::serve(config))
        }
        Command::Sip { command: SipCommand::Parse { files } } => {
            let stdout = std::io::stdout();
            match sip_cli::parse_files(&files, &mut stdout.lock()) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("opentrunk: {e}");
                    2
                }
            }
        }
    };
    std::process::exit(code);
}

fn init_logging(level: &str, json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
