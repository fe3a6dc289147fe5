pub mod engine;
pub mod runner;
