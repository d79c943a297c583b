//! The `devicehub` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    devicehub::cli::main(devicehub::cli::Cli::parse())
}
