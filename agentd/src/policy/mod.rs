//! Policy files: strict parsing with source positions, validation and normalisation.

mod model;
mod parse;

pub use model::*;
pub use parse::{load_file, parse_str, LoadOptions};
