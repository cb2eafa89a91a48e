pub mod dns;
pub mod run_resolver;
