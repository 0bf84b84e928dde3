//! Compose files to a typed [`model::Project`]: discovery, interpolation, `.env` and
//! `env_file`, merging, `extends`, `include`, profiles, normalization and validation.
//! Nothing here touches the host beyond reading files.

pub mod canonical;
pub mod consistency;
pub mod dotenv;
pub mod environment;
pub mod error;
pub mod hash;
pub mod input;
pub mod interpolate;
pub mod load;
pub mod merge;
pub mod model;
pub mod node;
pub mod normalize;
pub mod options;
pub mod paths;
pub mod render;
pub mod schema;
pub mod yaml;

pub use canonical::{parse_port_flag, parse_volume_flag};
pub use error::LoadError;
pub use load::{LoadedProject, load_project};
pub use options::{Normalization, ProjectOptions};
