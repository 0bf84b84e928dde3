//! Building images from Dockerfiles: the parser (`parse`), BuildKit's word expansion
//! (`expand`), `.dockerignore` matching (`dockerignore`) and the builder that runs steps in
//! berth's runtime and stores the result.
//!
//! The front half is pure: [`parse::parse`] turns the text into a [`dockerfile::Dockerfile`]
//! whose words are as written; the builder expands each one when it runs the instruction, with
//! [`expand::expand_word_tracked`] (the referenced variables are what a cache key must include)
//! or [`expand::expand_words`] (`EXPOSE`). The build context is filtered with
//! [`dockerignore::load_for`], asking about every file under every directory (an exception
//! can bring back a file under an ignored directory), and always sending the Dockerfile and
//! the ignore file themselves.

pub mod builder;
pub mod cache;
pub mod context;
pub mod dockerfile;
pub mod dockerignore;
pub mod downloads;
pub mod expand;
pub mod frontend;
pub mod git;
pub mod layer;
pub mod parse;
pub mod remote;
pub mod run;
pub mod ssh;
pub mod vars;

pub use builder::{BaseImages, BuildError, BuildRequest, Builder, ContextSource, SecretSource};
// berth's integration tests build from the store with these.
#[cfg(feature = "internals")]
pub use builder::{BuiltImage, StoreBaseImages};
