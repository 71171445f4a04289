//! Durable execution benchmark (filled in below).
fn main() {}
