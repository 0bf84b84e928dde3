//! TEMP STUB (not committed): replaced by the vol branch.
use crate::compose::model::{Project, ServiceConfig};
use crate::image::ResolvedImage;
use crate::runtime::spec::MountSpec;
use crate::state::Dirs;
use std::collections::BTreeMap;
use std::path::PathBuf;
#[derive(Debug, Clone)]
pub struct VolumeSpec {
    pub name: String,
    pub driver: String,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}
#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeRecord {
    pub name: String,
    pub driver: String,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub mountpoint: PathBuf,
    pub created: String,
    pub scope: String,
}
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{0}")]
    Msg(String),
}
#[derive(Debug)]
pub struct Volumes {
    _dirs: Dirs,
}
impl Volumes {
    pub fn new(dirs: &Dirs) -> Volumes {
        Volumes { _dirs: dirs.clone() }
    }
    pub fn create(&self, _spec: &VolumeSpec) -> Result<(VolumeRecord, bool), VolumeError> {
        Err(VolumeError::Msg("stub".into()))
    }
    pub fn get(&self, _name: &str) -> Result<Option<VolumeRecord>, VolumeError> {
        Ok(None)
    }
    pub fn list(&self) -> Result<Vec<VolumeRecord>, VolumeError> {
        Ok(vec![])
    }
    pub fn remove(&self, _name: &str, _force: bool) -> Result<(), VolumeError> {
        Ok(())
    }
}
pub fn project_volume_specs(_project: &Project) -> Vec<VolumeSpec> {
    vec![]
}
pub struct MountRequest<'a> {
    pub project: &'a Project,
    pub service_name: &'a str,
    pub service: &'a ServiceConfig,
    pub container_id: &'a str,
    pub replica: u32,
    pub image: &'a ResolvedImage,
    pub peer_mounts: &'a dyn Fn(PeerRef<'_>) -> Option<Vec<MountSpec>>,
    pub renew_anonymous: bool,
}
pub enum PeerRef<'a> {
    Service(&'a str),
    Container(&'a str),
}
pub fn service_mounts(_vols: &Volumes, _req: &MountRequest<'_>) -> Result<Vec<MountSpec>, VolumeError> {
    Ok(vec![])
}
