//! TEMP STUB (not committed): replaced by the spec branch.
use crate::compose::model::{Project, ServiceConfig};
use crate::image::ResolvedImage;
use crate::netns::AttachRequest;
use crate::runtime::spec::ContainerSpec;
use std::path::{Path, PathBuf};
pub struct ServiceContext<'a> {
    pub project: &'a Project,
    pub service_name: &'a str,
    pub service: &'a ServiceConfig,
    pub image: &'a ResolvedImage,
    pub container_id: &'a str,
    pub container_name: &'a str,
    pub replica: u32,
    pub config_hash: &'a str,
    pub project_dir: &'a Path,
    pub config_files: &'a [PathBuf],
    pub peer: &'a dyn Fn(PeerRef<'_>) -> Option<String>,
}
pub enum PeerRef<'a> {
    Service(&'a str),
    Container(&'a str),
}
pub struct BuiltSpec {
    pub spec: ContainerSpec,
    pub warnings: Vec<String>,
}
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Msg(String),
}
pub fn container_spec(_ctx: &ServiceContext<'_>) -> Result<BuiltSpec, SpecError> {
    Err(SpecError::Msg("stub".into()))
}
pub fn attach_request(_ctx: &ServiceContext<'_>, _hostname: &str) -> Result<AttachRequest, SpecError> {
    Err(SpecError::Msg("stub".into()))
}
