//! Policy files: strict parsing with source positions, validation and normalisation.

mod budget;
pub mod env;
mod model;
mod parse;
mod schema;

pub use budget::{show, Action, Budget, BudgetKey, Step, Unit};
pub use model::*;
pub use parse::{load_file, parse_str, LoadOptions, PolicyError};
pub use schema::schema;
