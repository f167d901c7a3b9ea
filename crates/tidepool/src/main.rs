//! The `tidepool` command: thin wiring of the CLI front-end.

fn main() {
    std::process::exit(0);
}
