pub mod block;
pub mod engine;
mod error;
pub mod store;

pub use error::{Error, Result};
