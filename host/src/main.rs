//! The `devicehub` command line.

fn main() {}
