//! Building images from Dockerfiles: the parser (`parse`), BuildKit's word expansion
//! (`expand`), `.dockerignore` matching (`dockerignore`) and the builder that runs steps in
//! berth's runtime and stores the result.

pub mod builder;
pub mod cache;
pub mod context;
pub mod dockerfile;
pub mod dockerignore;
pub mod expand;
pub mod frontend;
pub mod layer;
pub mod parse;
pub mod run;
pub mod vars;

pub use builder::{
    BaseImages, BuildError, BuildRequest, Builder, BuiltImage, ContextSource, SecretSource, StoreBaseImages,
};
