pub mod block;
pub mod store;
