//! Compose files to a typed [`model::Project`]: discovery, interpolation, `.env` and
//! `env_file`, merging, `extends`, `include`, profiles, normalization and validation.
//! Nothing here touches the host beyond reading files.

pub mod canonical;
pub mod dotenv;
pub mod error;
pub mod interpolate;
pub mod model;
pub mod node;
pub mod yaml;

pub use error::LoadError;
