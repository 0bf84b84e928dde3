//! Services: one per compose service (ClusterIP with its ports, headless without, so its name
//! resolves as on berth either way), one per network alias and link alias, and one of type
//! `NodePort` or `LoadBalancer` for published ports when the extension asks for it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{dns_label, with_suffix};
use super::{ConvertError, Out, ServiceExt, service_error};
use crate::compose::model::{Project, ServiceConfig};

/// A port the service's containers listen on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Port {
    /// Container port.
    pub port: i32,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// Application protocol, if given.
    pub app_protocol: Option<String>,
}

impl Port {
    /// The port's name in a Service: unique per (protocol, port).
    pub fn name(&self) -> String {
        format!("{}-{}", self.protocol.to_ascii_lowercase(), self.port)
    }
}

/// A port a Service cannot carry.
#[derive(Debug, thiserror::Error)]
enum PortError {
    /// Not one of Kubernetes' protocols (lowercased as written).
    #[error("protocol {0:?} is not tcp, udp or sctp")]
    Protocol(String),
    /// Outside 1-65535; `what` says which field.
    #[error("{what} {number} is not a port number (1-65535)")]
    Number { what: &'static str, number: u32 },
}

fn protocol(p: Option<&str>) -> Result<String, PortError> {
    match p.unwrap_or("tcp").to_ascii_lowercase().as_str() {
        "tcp" => Ok("TCP".into()),
        "udp" => Ok("UDP".into()),
        "sctp" => Ok("SCTP".into()),
        other => Err(PortError::Protocol(other.to_string())),
    }
}

fn port_number(n: u32, what: &'static str) -> Result<i32, PortError> {
    match i32::try_from(n) {
        Ok(p) if (1..=65535).contains(&p) => Ok(p),
        _ => Err(PortError::Number { what, number: n }),
    }
}

/// The container ports of a service: `ports` targets and `expose` entries, deduplicated.
pub(crate) fn container_ports(name: &str, s: &ServiceConfig) -> Result<Vec<Port>, ConvertError> {
    let mut ports: BTreeSet<Port> = BTreeSet::new();
    for p in &s.ports {
        let protocol =
            protocol(p.protocol.as_deref()).map_err(|e| service_error(name, format!("ports: {e}")))?;
        let port = port_number(p.target, "ports: target").map_err(|e| service_error(name, e.to_string()))?;
        ports.insert(Port { port, protocol, app_protocol: p.app_protocol.clone() });
    }
    for e in &s.expose {
        let (range, proto) = match e.split_once('/') {
            Some((r, p)) => (r, Some(p)),
            None => (e.as_str(), None),
        };
        let protocol = protocol(proto).map_err(|err| service_error(name, format!("expose {e:?}: {err}")))?;
        let bad = || service_error(name, format!("expose {e:?}: not a port or port range"));
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().map_err(|_| bad())?, b.parse::<u32>().map_err(|_| bad())?),
            None => {
                let p = range.parse::<u32>().map_err(|_| bad())?;
                (p, p)
            }
        };
        if hi < lo || hi - lo > 1000 {
            return Err(bad());
        }
        for n in lo..=hi {
            let port = port_number(n, "expose").map_err(|err| service_error(name, err.to_string()))?;
            if !ports.iter().any(|p| p.port == port && p.protocol == protocol) {
                ports.insert(Port { port, protocol: protocol.clone(), app_protocol: None });
            }
        }
    }
    Ok(ports.into_iter().collect())
}

/// The labels that select a service's pods.
pub(crate) fn selector(out: &Out, service: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(crate::labels::SERVICE.to_string(), dns_label(service))]);
    labels.insert(crate::labels::PROJECT.to_string(), dns_label(&out.project));
    labels
}

fn service_object(out: &Out, name: &str, target: &str, ports: &[Port]) -> Service {
    let mut meta = out.meta(name);
    if let Some(labels) = meta.labels.as_mut() {
        labels.insert(crate::labels::SERVICE.to_string(), dns_label(target));
    }
    let headless = ports.is_empty();
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            selector: Some(selector(out, target)),
            // Without ports the name still resolves: a headless Service lists the ready pods.
            cluster_ip: headless.then(|| "None".to_string()),
            ports: (!headless).then(|| {
                ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(p.name()),
                        port: p.port,
                        target_port: Some(IntOrString::Int(p.port)),
                        protocol: Some(p.protocol.clone()),
                        app_protocol: p.app_protocol.clone(),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Adds the Services of one compose service.
pub(crate) fn services(
    project: &Project,
    name: &str,
    s: &ServiceConfig,
    ext: &ServiceExt,
    out: &mut Out,
) -> Result<(), ConvertError> {
    let scope = format!("service {name:?}");
    let k8s = dns_label(name);
    let ports = container_ports(name, s)?;
    out.add(&scope, &k8s, &service_object(out, &k8s, name, &ports))?;

    // Published ports: outside the cluster only through a NodePort or LoadBalancer Service.
    let published: Vec<_> =
        s.ports.iter().filter(|p| p.published.as_deref().is_some_and(|x| !x.is_empty())).collect();
    if !published.is_empty() {
        // Without an external Service, the ports stay inside the cluster: the closest there is
        // to a host address such as 127.0.0.1. With one, the address cannot be chosen.
        if ext.service_type.is_some()
            && s.ports.iter().any(|p| p.host_ip.as_deref().is_some_and(|ip| !ip.is_empty()))
        {
            out.report.dropped(
                &scope,
                "ports.host_ip",
                "a NodePort or LoadBalancer Service cannot bind one host address",
            );
        }
        match ext.service_type.as_deref() {
            None => out.report.note(
                &scope,
                "ports.published",
                format!(
                    "published ports reach the pods only inside the cluster (Service {k8s:?}); set \
                     {}.service_type: NodePort or LoadBalancer to publish them",
                    super::EXTENSION
                ),
            ),
            Some(kind) => {
                let mut spec_ports = Vec::new();
                for p in &published {
                    let protocol = protocol(p.protocol.as_deref()).map_err(|e| service_error(name, e.to_string()))?;
                    let text = p.published.as_deref().unwrap_or_default();
                    let (first, ranged) = match text.split_once('-') {
                        Some((a, _)) => (a, true),
                        None => (text, false),
                    };
                    if ranged {
                        out.report.note(
                            &scope,
                            "ports.published",
                            format!("range {text:?}: only its first port is published"),
                        );
                    }
                    let number: u32 = first.parse().map_err(|_| {
                        service_error(name, format!("ports: published {text:?} is not a port number"))
                    })?;
                    let number =
                        port_number(number, "ports: published").map_err(|e| service_error(name, e.to_string()))?;
                    let target =
                        port_number(p.target, "ports: target").map_err(|e| service_error(name, e.to_string()))?;
                    let node_port = if kind == "NodePort" {
                        if (30000..=32767).contains(&number) {
                            Some(number)
                        } else {
                            out.report.note(
                                &scope,
                                "ports.published",
                                format!("{number} is outside the NodePort range 30000-32767: the cluster picks a node port"),
                            );
                            None
                        }
                    } else {
                        None
                    };
                    let sp = ServicePort {
                        name: Some(format!("{}-{number}", protocol.to_ascii_lowercase())),
                        port: number,
                        target_port: Some(IntOrString::Int(target)),
                        protocol: Some(protocol),
                        node_port,
                        app_protocol: p.app_protocol.clone(),
                    };
                    if !spec_ports
                        .iter()
                        .any(|x: &ServicePort| x.port == sp.port && x.protocol == sp.protocol)
                    {
                        spec_ports.push(sp);
                    }
                }
                let ext_name = with_suffix(&k8s, "published");
                let mut svc = service_object(out, &ext_name, name, &[]);
                if let Some(spec) = svc.spec.as_mut() {
                    spec.cluster_ip = None;
                    spec.type_ = Some(kind.to_string());
                    spec.ports = Some(spec_ports);
                }
                out.add(&scope, &ext_name, &svc)?;
            }
        }
    }

    // Network aliases and link aliases: more names for the same pods.
    let mut aliases: BTreeSet<String> = BTreeSet::new();
    for (net, cfg) in s.networks.iter().flatten() {
        let Some(cfg) = cfg else { continue };
        aliases.extend(cfg.aliases.iter().cloned());
        for (key, set) in [
            ("ipv4_address", cfg.ipv4_address.is_some()),
            ("ipv6_address", cfg.ipv6_address.is_some()),
            ("mac_address", cfg.mac_address.is_some()),
            ("link_local_ips", !cfg.link_local_ips.is_empty()),
            ("interface_name", cfg.interface_name.is_some()),
            ("driver_opts", !cfg.driver_opts.is_empty()),
            ("priority", cfg.priority.is_some() || cfg.gw_priority.is_some()),
        ] {
            if set {
                out.report.dropped(
                    &scope,
                    &format!("networks.{net}.{key}"),
                    "pods get their addresses from the cluster network",
                );
            }
        }
    }
    for alias in aliases {
        add_alias(project, out, &scope, &alias, name, &ports)?;
    }
    for link in &s.links {
        let (target, alias) = link.split_once(':').unwrap_or((link.as_str(), link.as_str()));
        if let Some(t) = project.services.get(target) {
            let target_ports = container_ports(target, t)?;
            add_alias(project, out, &scope, alias, target, &target_ports)?;
        }
    }
    Ok(())
}

fn add_alias(
    project: &Project,
    out: &mut Out,
    scope: &str,
    alias: &str,
    target: &str,
    ports: &[Port],
) -> Result<(), ConvertError> {
    let k8s = dns_label(alias);
    if k8s == dns_label(target) {
        return Ok(());
    }
    if k8s != alias {
        out.report.note(
            scope,
            "aliases",
            format!("alias {alias:?} is not a DNS-1123 label: it resolves as {k8s:?}"),
        );
    }
    if project.services.keys().any(|n| dns_label(n) == k8s) {
        out.report.dropped(scope, "aliases", format!("alias {alias:?} is another service's name"));
        return Ok(());
    }
    if out.has("Service", &k8s) {
        // Declared by two services (or twice): the first one keeps it, as a name has one owner.
        out.report.dropped(scope, "aliases", format!("alias {alias:?} is already another service's alias"));
        return Ok(());
    }
    out.add(scope, &k8s, &service_object(out, &k8s, target, ports))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{conv, get, try_conv};
    use super::super::{ConvertOptions, Level};

    #[test]
    fn every_service_gets_a_service_headless_without_ports() {
        let c = conv(json!({"services": {
            "web": {"image": "nginx", "ports": [{"target": 80, "published": "8080"}], "expose": ["9000-9001/udp", "80"]},
            "worker": {"image": "w"}
        }}));
        let web = get(&c, "Service", "web");
        assert_eq!(
            web["spec"]["ports"][0],
            json!({"name": "tcp-80", "port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(web["spec"]["ports"].as_array().map(Vec::len), Some(3));
        assert_eq!(web["spec"]["selector"]["com.docker.compose.service"], "web");
        assert!(web["spec"].get("clusterIP").is_none());
        let worker = get(&c, "Service", "worker");
        assert_eq!(worker["spec"]["clusterIP"], "None");
        assert!(c.report.has("service \"web\"", "ports.published", Level::Note));
    }

    #[test]
    fn published_ports_by_extension() {
        let c = conv(json!({"services": {
            "web": {"image": "nginx", "ports": [{"target": 80, "published": "30080"}, {"target": 443, "published": "8443"}],
                    "x-berth-kubernetes": {"service_type": "NodePort"}},
            "lb": {"image": "nginx", "ports": [{"target": 80, "published": "8080", "host_ip": "127.0.0.1"}],
                   "x-berth-kubernetes": {"service_type": "LoadBalancer"}}
        }}));
        let np = get(&c, "Service", "web-published");
        assert_eq!(np["spec"]["type"], "NodePort");
        assert_eq!(np["spec"]["ports"][0]["nodePort"], 30080);
        assert!(np["spec"]["ports"][1].get("nodePort").is_none());
        let lb = get(&c, "Service", "lb-published");
        assert_eq!(lb["spec"]["type"], "LoadBalancer");
        assert_eq!(lb["spec"]["ports"][0]["port"], 8080);
        assert_eq!(lb["spec"]["ports"][0]["targetPort"], 80);
        assert!(c.report.has("service \"lb\"", "ports.host_ip", Level::Dropped));
    }

    #[test]
    fn aliases_and_links_become_services() {
        let c = conv(json!({"services": {
            "db": {"image": "pg", "expose": ["5432"], "networks": {"default": {"aliases": ["database", "db"], "ipv4_address": "10.0.0.2"}}},
            "app": {"image": "a", "links": ["db:sql"]}
        }}));
        assert_eq!(get(&c, "Service", "database")["spec"]["selector"]["com.docker.compose.service"], "db");
        assert_eq!(get(&c, "Service", "sql")["spec"]["ports"][0]["port"], 5432);
        assert!(c.report.has("service \"db\"", "networks.default.ipv4_address", Level::Dropped));
        assert!(
            try_conv(
                json!({"services": {"a": {"image": "x", "expose": ["http"]}}}),
                ConvertOptions::default()
            )
            .is_err()
        );
    }
}
