//! Scale benchmark (filled in below).

fn main() {}
