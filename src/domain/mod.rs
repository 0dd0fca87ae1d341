//! The domain: newtypes parsed at the edge, entities, the rules of the seed, and one error
//! enum. It never imports tonic; storage is reached through `crate::store` only.

pub mod audit;
pub mod catalog;
pub mod error;
pub mod hub;
pub mod model;
pub mod rotation;
pub mod types;

pub use error::{Error, FieldViolation, Precondition, Result, Violations};
pub use hub::Hub;
