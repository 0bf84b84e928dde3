//! nftables rules, all in one table of family `inet` per berth root, driven through `nft -j`
//! (the `nftables` crate). The default root (`/var/lib/berth`) owns table `berth`; any other
//! root (tests, a second install) owns `berth_` + 8 hex digits of its path, so that two roots on
//! one host never rebuild each other's rules away.
//!
//! The table is regenerated whole from state (network and endpoint records) after every
//! change, in one atomic nft transaction (`add table; delete table; add table; ...`). That makes
//! teardown trivially complete: a network or port that has no record has no rule, and the whole
//! table goes when the last network does. Callers hold the network lock, so two regenerations
//! never interleave.
//!
//! Chains:
//! - `forward` (filter, hook forward, priority -10, policy accept): accept established traffic
//!   and traffic that stays on a bridge; drop traffic between two berth bridges; drop anything
//!   entering or leaving an internal network's bridge; accept DNAT'ed traffic to and anything
//!   from a non-internal bridge.
//! - `prerouting` / `output` (nat, priority -100): DNAT of published ports, for addresses local
//!   to the host (and 127.0.0.1 from the host itself, see PORTS.md).
//! - `postrouting` (nat, priority 100): masquerade what leaves a non-internal subnet through
//!   another interface; hairpin (a container reaching its own network through a published
//!   port); loopback-sourced DNAT'ed traffic.
//!
//! Docker: Docker Engine sets the `FORWARD` policy of iptables' `filter` table to drop (on
//! Debian's iptables-nft that is nft table `ip filter`). A drop verdict in any base chain at the
//! forward hook is final, so an accept in our table cannot let berth's forwarded traffic
//! through. As netavark does, berth then puts accepts for its own bridges into Docker's
//! `DOCKER-USER` chain (the chain Docker keeps for its users' rules), each tagged with a
//! comment naming this root's table, and takes exactly those away again: the one exception to
//! "rules only in tables named berth", because the issue asks that berth work beside Docker
//! without breaking Docker's containers. Our forward chain runs first (priority -10 < 0), so
//! berth's isolation drops still apply before any of those accepts.
//! Traffic that stays on one bridge is switched, not routed, and is only affected when
//! br_netfilter is loaded.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::error::NetError;
use super::ports::PublishedPort;
use super::record::{EndpointRecord, NetworkRecord};

const FAMILY: &str = "inet";

/// The table of the root at `root`.
pub fn table_name(root: &std::path::Path) -> String {
    match super::scope(root) {
        scope if scope.is_empty() => "berth".to_string(),
        scope => format!("berth_{scope}"),
    }
}

fn meta(key: &str, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": {"meta": {"key": key}}, "right": right}})
}

fn saddr(net: &ipnet::IpNet, op: &str) -> Value {
    addr_match("saddr", net, op)
}

fn addr_match(field: &str, net: &ipnet::IpNet, op: &str) -> Value {
    let proto = if net.addr().is_ipv4() { "ip" } else { "ip6" };
    json!({"match": {"op": op, "left": {"payload": {"protocol": proto, "field": field}},
        "right": {"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}}}})
}

fn ct(key: &str, right: Value) -> Value {
    json!({"match": {"op": "in", "left": {"ct": {"key": key}}, "right": right}})
}

struct Builder<'a> {
    table: &'a str,
    cmds: Vec<Value>,
}

impl Builder<'_> {
    fn rule(&mut self, chain: &str, expr: Vec<Value>) {
        self.cmds.push(
            json!({"add": {"rule": {"family": FAMILY, "table": self.table, "chain": chain, "expr": expr}}}),
        );
    }

    fn base_chain(&mut self, name: &str, kind: &str, hook: &str, prio: i32) {
        self.cmds.push(
            json!({"add": {"chain": {"family": FAMILY, "table": self.table, "name": name, "type": kind,
            "hook": hook, "prio": prio, "policy": "accept"}}}),
        );
    }

    fn table(&self) -> Value {
        json!({"table": {"family": FAMILY, "name": self.table}})
    }
}

/// Builds the whole ruleset of table `table` for these networks and endpoints.
pub fn ruleset(table: &str, nets: &[NetworkRecord], endpoints: &[EndpointRecord]) -> Value {
    let mut b = Builder { table, cmds: Vec::new() };
    // Adding an existing table is a no-op, so add-then-delete empties it whether or not it
    // existed, all inside one transaction.
    let t = b.table();
    b.cmds.push(json!({"add": t.clone()}));
    b.cmds.push(json!({"delete": t.clone()}));
    if nets.is_empty() {
        return json!({"nftables": b.cmds});
    }
    b.cmds.push(json!({"add": t}));
    b.base_chain("forward", "filter", "forward", -10);
    b.base_chain("prerouting", "nat", "prerouting", -100);
    b.base_chain("output", "nat", "output", -100);
    b.base_chain("postrouting", "nat", "postrouting", 100);

    let bridges: Vec<&str> = nets.iter().map(|n| n.bridge.as_str()).collect();
    for n in nets {
        let br = json!(n.bridge);
        b.rule(
            "forward",
            vec![
                meta("iifname", "==", br.clone()),
                meta("oifname", "==", br.clone()),
                json!({"accept": null}),
            ],
        );
        // Bridges of other berth roots are other networks too: no way into them either.
        b.rule(
            "forward",
            vec![
                meta("iifname", "==", br.clone()),
                meta("oifname", "==", json!("berth*")),
                json!({"drop": null}),
            ],
        );
        let others: Vec<&str> = bridges.iter().copied().filter(|b| *b != n.bridge).collect();
        if !others.is_empty() {
            b.rule(
                "forward",
                vec![
                    meta("iifname", "==", br.clone()),
                    meta("oifname", "==", json!({"set": others})),
                    json!({"drop": null}),
                ],
            );
        }
        if n.internal {
            b.rule("forward", vec![meta("iifname", "==", br.clone()), json!({"drop": null})]);
            b.rule("forward", vec![meta("oifname", "==", br.clone()), json!({"drop": null})]);
            continue;
        }
        b.rule(
            "forward",
            vec![
                meta("oifname", "==", br.clone()),
                ct("state", json!(["established", "related"])),
                json!({"accept": null}),
            ],
        );
        b.rule(
            "forward",
            vec![meta("oifname", "==", br.clone()), ct("status", json!("dnat")), json!({"accept": null})],
        );
        b.rule("forward", vec![meta("iifname", "==", br.clone()), json!({"accept": null})]);
        for s in &n.subnets {
            b.rule(
                "postrouting",
                vec![saddr(&s.subnet, "=="), meta("oifname", "!=", br.clone()), json!({"masquerade": null})],
            );
        }
    }
    for n in nets {
        let br = json!(n.bridge);
        for s in &n.subnets {
            // Hairpin: a container reaching a published port of its own network gets its reply
            // through the host only if its source is rewritten.
            b.rule(
                "postrouting",
                vec![
                    meta("oifname", "==", br.clone()),
                    ct("status", json!("dnat")),
                    saddr(&s.subnet, "=="),
                    json!({"masquerade": null}),
                ],
            );
        }
        // Loopback-sourced traffic DNAT'ed into the bridge (route_localnet) needs a real source.
        let lo: ipnet::IpNet = "127.0.0.0/8".parse().expect("literal");
        b.rule("postrouting", vec![meta("oifname", "==", br), saddr(&lo, "=="), json!({"masquerade": null})]);
    }
    for rec in endpoints {
        for p in &rec.ports {
            for chain in ["prerouting", "output"] {
                b.rule(chain, dnat_expr(p));
            }
        }
    }
    json!({"nftables": b.cmds})
}

fn dnat_expr(p: &PublishedPort) -> Vec<Value> {
    let mut expr = Vec::new();
    let v6 = p.container_ip.is_ipv6();
    expr.push(meta("nfproto", "==", json!(if v6 { "ipv6" } else { "ipv4" })));
    match p.host_ip {
        Some(ip) if !ip.is_unspecified() => {
            let net = ipnet::IpNet::from(ip);
            expr.push(addr_match("daddr", &net, "=="));
        }
        _ => expr.push(json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}})),
    }
    expr.push(meta("l4proto", "==", json!(p.protocol.as_str())));
    expr.push(json!({"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": p.host_port}}));
    let family = match p.container_ip {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip6",
    };
    expr.push(
        json!({"dnat": {"family": family, "addr": p.container_ip.to_string(), "port": p.container_port}}),
    );
    expr
}

/// Applies the ruleset of table `table` for these networks and endpoints (removes the table
/// when there are no networks), and keeps Docker's `DOCKER-USER` chain letting berth's
/// bridges through when Docker is there.
pub fn apply(table: &str, nets: &[NetworkRecord], endpoints: &[EndpointRecord]) -> Result<(), NetError> {
    run(ruleset(table, nets, endpoints))?;
    sync_docker_user(table, nets)
}

fn run(value: Value) -> Result<(), NetError> {
    let parsed: nftables::schema::Nftables =
        serde_json::from_value(value).map_err(NetError::Ruleset)?;
    nftables::helper::apply_ruleset(&parsed).map_err(NetError::Firewall)
}

/// Docker's chain for its users' rules.
const DOCKER_USER: &str = "DOCKER-USER";

/// The comment that marks this root's rules in `DOCKER-USER`.
fn docker_tag(table: &str) -> String {
    format!("{table} accept")
}

/// The accepts for berth's bridges in Docker's `DOCKER-USER` chain of `family` (`ip`/`ip6`).
pub fn docker_user_rules(family: &str, table: &str, nets: &[NetworkRecord]) -> Vec<Value> {
    let tag = docker_tag(table);
    let mut out = Vec::new();
    let mut add = |expr: Vec<Value>| {
        out.push(json!({"insert": {"rule": {"family": family, "table": "filter", "chain": DOCKER_USER,
            "expr": expr, "comment": tag}}}));
    };
    for n in nets {
        let br = json!(n.bridge);
        add(vec![
            meta("iifname", "==", br.clone()),
            meta("oifname", "==", br.clone()),
            json!({"accept": null}),
        ]);
        if n.internal {
            continue;
        }
        add(vec![meta("iifname", "==", br.clone()), json!({"accept": null})]);
        add(vec![
            meta("oifname", "==", br.clone()),
            ct("state", json!(["established", "related"])),
            json!({"accept": null}),
        ]);
        add(vec![meta("oifname", "==", br), ct("status", json!("dnat")), json!({"accept": null})]);
    }
    out
}

/// Replaces this root's rules in every `DOCKER-USER` chain there is (`ip` and `ip6` filter).
fn sync_docker_user(table: &str, nets: &[NetworkRecord]) -> Result<(), NetError> {
    use nftables::schema::{NfListObject, NfObject};
    let current = nftables::helper::get_current_ruleset().map_err(NetError::Firewall)?;
    let tag = docker_tag(table);
    for family in ["ip", "ip6"] {
        let has_chain = current.objects.iter().any(|o| {
            matches!(o, NfObject::ListObject(NfListObject::Chain(c))
                if c.table == "filter" && c.name == DOCKER_USER && family_name(&c.family) == family)
        });
        if !has_chain {
            continue;
        }
        let mut cmds: Vec<Value> = current
            .objects
            .iter()
            .filter_map(|o| match o {
                NfObject::ListObject(NfListObject::Rule(r))
                    if r.table == "filter"
                        && r.chain == DOCKER_USER
                        && family_name(&r.family) == family
                        && r.comment.as_deref() == Some(tag.as_str()) =>
                {
                    r.handle.map(|h| {
                        json!({"delete": {"rule": {"family": family, "table": "filter", "chain": DOCKER_USER, "handle": h, "expr": []}}})
                    })
                }
                _ => None,
            })
            .collect();
        let wanted: Vec<&NetworkRecord> = nets
            .iter()
            .filter(|n| family == "ip" || n.subnets.iter().any(|s| s.subnet.addr().is_ipv6()))
            .collect();
        let wanted: Vec<NetworkRecord> = wanted.into_iter().cloned().collect();
        cmds.extend(docker_user_rules(family, table, &wanted));
        if !cmds.is_empty() {
            run(json!({"nftables": cmds}))?;
        }
    }
    Ok(())
}

fn family_name(f: &nftables::types::NfFamily) -> &'static str {
    use nftables::types::NfFamily;
    match f {
        NfFamily::IP => "ip",
        NfFamily::IP6 => "ip6",
        NfFamily::INet => "inet",
        NfFamily::ARP => "arp",
        NfFamily::Bridge => "bridge",
        NfFamily::NetDev => "netdev",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::record::SubnetRecord;

    fn net(name: &str, bridge: &str, subnet: &str, internal: bool) -> NetworkRecord {
        let subnet: ipnet::IpNet = subnet.parse().unwrap();
        NetworkRecord {
            name: name.into(),
            id: "0".repeat(64),
            driver: "bridge".into(),
            bridge: bridge.into(),
            subnets: vec![SubnetRecord { subnet, gateway: subnet.hosts().next().unwrap(), ip_range: None }],
            internal,
            ipv6: false,
            mtu: None,
            labels: Default::default(),
            options: Default::default(),
            created: 0,
            spec: Default::default(),
        }
    }

    #[test]
    fn rulesets_parse_as_nft_json() {
        let nets =
            [net("a", "berth00000001", "10.1.0.0/24", false), net("b", "berth00000002", "10.2.0.0/24", true)];
        let value = ruleset("berth_test", &nets, &[]);
        let parsed: Result<nftables::schema::Nftables, _> = serde_json::from_value(value);
        assert!(parsed.is_ok(), "{parsed:?}");
        let docker = docker_user_rules("ip", "berth_test", &nets);
        assert_eq!(docker.len(), 5);
        let parsed: Result<nftables::schema::Nftables, _> =
            serde_json::from_value(json!({"nftables": docker}));
        assert!(parsed.is_ok(), "{parsed:?}");
    }
}
