//! The `opentrunk` binary: the operator's command line.

use clap::{Parser, Subcommand};

mod sip_cli;

#[derive(Parser)]
#[command(name = "opentrunk", version, about = "Self-hostable elastic SIP trunking")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
