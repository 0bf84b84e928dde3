//! `berth network create|ls|inspect|rm|prune`, run in a throwaway network namespace.

mod net_support;

use std::process::Command;

use net_support::*;

fn berth(env: &Env, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_ROOT", &env.dirs().root)
        .env("BERTH_RUN", &env.dirs().run)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn network_commands() {
    in_netns(|| {
        let env = Env::new();
        let (ok, _, err) = berth(
            &env,
            &[
                "network",
                "create",
                "--subnet",
                "10.231.7.0/24",
                "--internal",
                "--label",
                "a=b",
                "-o",
                "com.docker.network.driver.mtu=1400",
                "n1",
            ],
        );
        assert!(ok, "{err}");
        let (ok, _, err) = berth(&env, &["network", "create", "--ipv6", "n2"]);
        assert!(ok, "{err}");
        let (_, out, _) = berth(&env, &["network", "ls", "-q"]);
        assert_eq!(out, "n1\nn2\n");
        let (ok, out, _) = berth(&env, &["network", "inspect", "n1"]);
        assert!(ok);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.231.7.0/24");
        assert_eq!(v[0]["Internal"], true);
        assert_eq!(v[0]["Labels"]["a"], "b");
        let (_, out, _) = berth(&env, &["network", "inspect", "n2"]);
        assert!(out.contains("fd62:6572:7468"), "{out}");
        let (ok, _, err) = berth(&env, &["network", "create", "--subnet", "bogus", "n3"]);
        assert!(!ok && err.contains("invalid subnet"), "{err}");
        let (ok, _, err) = berth(&env, &["network", "rm", "nope"]);
        assert!(!ok && err.contains("not found"), "{err}");
        let (ok, _, _) = berth(&env, &["network", "rm", "n1"]);
        assert!(ok);
        let (ok, out, _e) = berth(&env, &["network", "prune"]);
        assert!(ok && out.contains("n2"), "{out} {_e}");
        let (_, out, _) = berth(&env, &["network", "ls", "-q"]);
        assert_eq!(out, "");
        assert!(!berth_table_exists());
        assert!(berth::netns::dns::running(env.dirs()).is_none());
    });
}
