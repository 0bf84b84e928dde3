//! Building images from Dockerfiles: the parser (`parse`), BuildKit's word expansion
//! (`expand`), `.dockerignore` matching (`dockerignore`) and the builder that runs steps in
//! berth's runtime and stores the result.

pub mod dockerfile;
pub mod dockerignore;
pub mod expand;
pub mod parse;
