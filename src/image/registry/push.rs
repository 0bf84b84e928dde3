//! `push`: each blob the registry lacks is mounted from another repository of the same
//! registry when the store knows one holding it, else uploaded in chunks (`POST`, `PATCH`
//! with `Content-Range`, `PUT ?digest=`), several blobs at once; then the manifest is put by
//! tag.

use std::fs;
use std::io::Read;

use serde_json::Value;
use ureq::http::StatusCode;

use super::client::{Client, status_error};
use super::pull::{human, record_sources, sources_of};
use super::{Registry, RegistryError};
use crate::image::events::ImageEvents;
use crate::image::{ImageStore, Reference};

fn hex12(digest: &str) -> &str {
    let h = digest.strip_prefix("sha256:").unwrap_or(digest);
    &h[..h.len().min(12)]
}

/// A URL from a `Location` header: absolute, or a path on `base`.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{base}{location}")
    }
}

fn location(resp: &ureq::http::Response<ureq::Body>, what: &str) -> Result<String, RegistryError> {
    resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string).ok_or_else(|| {
        RegistryError::Invalid {
            what: what.to_string(),
            message: "the registry gave no upload location".into(),
        }
    })
}

fn with_auth(
    mut req: ureq::RequestBuilder<ureq::typestate::WithBody>,
    auth: Option<&str>,
) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    req
}

/// Pushes one blob of the store unless the registry has it.
#[allow(clippy::too_many_arguments)]
fn push_blob(
    client: &Client,
    store: &ImageStore,
    r: &Reference,
    digest: &str,
    size: u64,
    scopes: &[String],
    events: &dyn ImageEvents,
    show: bool,
) -> Result<(), RegistryError> {
    let name = hex12(digest).to_string();
    let host = r.api_host();
    let what = format!("{} blob {digest}", r.full());
    let blob_url = format!("/v2/{}/blobs/{digest}", r.path());
    let head = client.request(host, scopes, true, &|agent, base, auth| {
        let mut req = agent.head(format!("{base}{blob_url}"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.call()
    })?;
    if head.status().is_success() {
        if show {
            events.event("Layer", &name, "Layer already exists", true);
        }
        return Ok(());
    }
    if head.status() != StatusCode::NOT_FOUND {
        return Err(status_error(&what, r.registry(), head));
    }
    let uploads = format!("/v2/{}/blobs/uploads/", r.path());
    let mut upload_at = None;
    // A blob pulled from (or pushed to) another repository of this registry is mounted.
    let from = sources_of(store, digest).into_iter().find_map(|repo| {
        let (reg, path) = repo.split_once('/')?;
        (reg == r.registry() && path != r.path()).then(|| path.to_string())
    });
    if let Some(from) = from {
        let mut mount_scopes = scopes.to_vec();
        mount_scopes.push(format!("repository:{from}:pull"));
        let resp = client.request(host, &mount_scopes, true, &|agent, base, auth| {
            with_auth(agent.post(format!("{base}{uploads}?mount={digest}&from={from}")), auth).send(&[][..])
        })?;
        match resp.status() {
            StatusCode::CREATED => {
                if show {
                    events.event("Layer", &name, &format!("Mounted from {from}"), true);
                }
                return Ok(());
            }
            StatusCode::ACCEPTED => upload_at = Some(location(&resp, &what)?),
            _ => {}
        }
    }
    let mut upload_at = match upload_at {
        Some(l) => l,
        None => {
            let resp = client.request(host, scopes, true, &|agent, base, auth| {
                with_auth(agent.post(format!("{base}{uploads}")), auth).send(&[][..])
            })?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(status_error(&what, r.registry(), resp));
            }
            location(&resp, &what)?
        }
    };
    let path = store.blob_path(digest);
    let mut file = fs::File::open(&path)
        .map_err(|source| RegistryError::Io { path: path.display().to_string(), source })?;
    let chunk_size = client.opts().upload_chunk.max(1);
    let mut buf = vec![0u8; chunk_size];
    let mut sent = 0u64;
    while sent < size {
        let mut n = 0;
        while n < chunk_size {
            let got = file
                .read(&mut buf[n..])
                .map_err(|source| RegistryError::Io { path: path.display().to_string(), source })?;
            if got == 0 {
                break;
            }
            n += got;
        }
        if n == 0 {
            return Err(RegistryError::Invalid {
                what,
                message: format!("the stored blob is shorter ({sent} bytes) than its manifest says ({size})"),
            });
        }
        let chunk = &buf[..n];
        let range = format!("{}-{}", sent, sent + n as u64 - 1);
        let at = upload_at.clone();
        let resp = client.request(host, scopes, false, &|agent, base, auth| {
            with_auth(agent.patch(absolute(base, &at)), auth)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", &range)
                .send(chunk)
        })?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(&what, r.registry(), resp));
        }
        upload_at = location(&resp, &what)?;
        sent += n as u64;
        if show {
            events.event("Layer", &name, &format!("Pushing {}/{}", human(sent), human(size)), false);
        }
    }
    let sep = if upload_at.contains('?') { '&' } else { '?' };
    let done_url = format!("{upload_at}{sep}digest={digest}");
    let resp = client.request(host, scopes, false, &|agent, base, auth| {
        with_auth(agent.put(absolute(base, &done_url)), auth).send(&[][..])
    })?;
    if resp.status() != StatusCode::CREATED {
        return Err(status_error(&what, r.registry(), resp));
    }
    if show {
        events.event("Layer", &name, "Pushed", true);
    }
    Ok(())
}

pub(crate) fn push(
    reg: &Registry,
    store: &ImageStore,
    reference: &str,
    events: &dyn ImageEvents,
) -> Result<String, RegistryError> {
    let r = Reference::parse(reference)?;
    let short = r.short();
    events.event("Image", &short, "Pushing", false);
    let result = push_inner(&reg.client, store, &r, events);
    match &result {
        Ok(d) => events.event("Image", &short, &format!("Pushed {d}"), true),
        Err(e) => events.failed("Image", &short, &e.to_string()),
    }
    result
}

fn push_inner(
    client: &Client,
    store: &ImageStore,
    r: &Reference,
    events: &dyn ImageEvents,
) -> Result<String, RegistryError> {
    let name = r.full();
    if r.digest.is_some() {
        return Err(RegistryError::Invalid {
            what: name,
            message: "cannot push a digest reference; push a tag".into(),
        });
    }
    let (digest, media_type, bytes) = store.manifest_of(&name)?;
    let manifest: Value = serde_json::from_slice(&bytes)
        .map_err(|source| RegistryError::Malformed { what: name.clone(), source })?;
    let scopes = vec![format!("repository:{}:pull,push", r.path())];
    let desc = |d: &Value| -> Result<(String, u64), RegistryError> {
        let digest = d["digest"].as_str().unwrap_or_default().to_string();
        let size = d["size"].as_u64().unwrap_or(0);
        if digest.is_empty() {
            return Err(RegistryError::Invalid {
                what: name.clone(),
                message: "a descriptor without digest".into(),
            });
        }
        Ok((digest, size))
    };
    let mut blobs = Vec::new();
    for l in manifest["layers"].as_array().into_iter().flatten() {
        let (d, s) = desc(l)?;
        events.event("Layer", hex12(&d), "Preparing", false);
        blobs.push((d, s, true));
    }
    let (config_digest, config_size) = desc(&manifest["config"])?;
    let mut all = blobs.clone();
    all.push((config_digest.clone(), config_size, false));
    // Bounded parallel uploads (docker's max-concurrent-uploads, 5).
    super::for_each_bounded(&all, client.opts().max_concurrent_uploads, |(d, size, show)| {
        push_blob(client, store, r, d, *size, &scopes, events, *show)
    })?;
    let url = format!("/v2/{}/manifests/{}", r.path(), r.tag);
    let resp = client.request(r.api_host(), &scopes, true, &|agent, base, auth| {
        with_auth(agent.put(format!("{base}{url}")), auth)
            .header("Content-Type", &media_type)
            .send(&bytes[..])
    })?;
    if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
        return Err(status_error(&format!("{name} manifest"), r.registry(), resp));
    }
    let mut digests: Vec<String> = blobs.into_iter().map(|(d, _, _)| d).collect();
    digests.push(config_digest);
    let _lock = store.lock()?;
    record_sources(store, &r.repository, &digests);
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve() {
        assert_eq!(
            absolute("http://h:1", "/v2/x/blobs/uploads/u?_state=s"),
            "http://h:1/v2/x/blobs/uploads/u?_state=s"
        );
        assert_eq!(absolute("http://h:1", "https://o/x"), "https://o/x");
    }
}
