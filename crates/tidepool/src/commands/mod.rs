//! One module per command group; each returns the [`crate::exit::Exit`]
//! it ends with, or an error for unexpected failures.

pub mod about;
pub mod capacity;
pub mod config;
#[cfg(feature = "lab")]
pub mod demo;
pub mod doctor;
pub mod health;
#[cfg(feature = "lab")]
pub mod lab;
pub mod mcp;
pub mod orphans;
pub mod plan;
pub mod run;
pub mod scale_up;
pub mod talos;
pub mod upgrade;
pub mod wait;
pub mod workers;
