//! Policy files: strict parsing with source positions, validation and normalisation.

mod budget;
mod model;
mod parse;

pub use budget::{show, Action, Budget, BudgetKey, Step, Unit};
pub use model::*;
pub use parse::{load_file, parse_str, LoadOptions, PolicyError};
