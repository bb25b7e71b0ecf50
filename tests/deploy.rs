//! The shipped deployment examples are valid keygate configuration: the config in the
//! Kubernetes ConfigMap with the keys in the Secret, and the compose folder's files,
//! pass `keygate check`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use support::TempDir;

fn manifest(name: &str) -> serde_yaml::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(name);
    serde_yaml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn check(dir: &TempDir) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("-c")
        .arg(dir.path().join("config.yaml"))
        .arg("check")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn configmap_and_secret_pass_check() {
    let cm = manifest("configmap.yaml");
    let secret = manifest("secret.yaml");
    let config = cm["data"]["config.yaml"].as_str().unwrap();
    let keys = secret["stringData"]["keys.yaml"].as_str().unwrap();
    // The pod paths become paths in a temporary folder; nothing else changes.
    let dir = TempDir::new();
    let root = dir.path().display().to_string();
    dir.write(
        "config.yaml",
        &config
            .replace("/etc/keygate/keys/keys.yaml", &format!("{root}/keys.yaml"))
            .replace("/var/lib/keygate/state", &format!("{root}/state"))
            .replace("/var/log/keygate", &format!("{root}/logs")),
    );
    dir.write("keys.yaml", keys);
    let (ok, out) = check(&dir);
    assert!(ok, "{out}");
    assert!(
        out.contains("3 categories") && out.contains("2 keys"),
        "{out}"
    );
    // The deployment mounts what the config names.
    let deploy = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/deployment.yaml"),
    )
    .unwrap();
    assert!(
        deploy.contains("mountPath: /etc/keygate/keys")
            && config.contains("/etc/keygate/keys/keys.yaml")
    );
    assert!(deploy.contains("/etc/keygate/config/config.yaml"));
}

#[test]
fn compose_files_pass_check() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/keygate");
    let dir = TempDir::new();
    let root = dir.path().display().to_string();
    let config = std::fs::read_to_string(src.join("config.yaml")).unwrap();
    dir.write(
        "config.yaml",
        &config
            .replace("/etc/keygate/keys.yaml", &format!("{root}/keys.yaml"))
            .replace("/var/lib/keygate", &format!("{root}/state"))
            .replace("/var/log/keygate", &format!("{root}/logs")),
    );
    dir.write(
        "keys.yaml",
        &std::fs::read_to_string(src.join("keys.yaml")).unwrap(),
    );
    let (ok, out) = check(&dir);
    assert!(ok, "{out}");
}

/// `kustomize build`, the part this example uses: every listed resource exists and
/// parses, and the pieces refer to each other correctly.
#[test]
fn kustomization_renders_and_pieces_fit() {
    let k = manifest("kustomization.yaml");
    let resources: Vec<String> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let listed: std::collections::BTreeSet<&str> = resources.iter().map(String::as_str).collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name != "kustomization.yaml" {
            assert!(
                listed.contains(name.as_str()),
                "{name} is not in kustomization.yaml"
            );
        }
    }
    let docs: Vec<serde_yaml::Value> = resources.iter().map(|r| manifest(r)).collect();
    let by_kind = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap().clone();
    let deploy = by_kind("Deployment");
    let service = by_kind("Service");
    let monitor = by_kind("ServiceMonitor");
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&pod_labels[k], v, "the Service selects the pods");
    }
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the Service"
        );
    }
    let port_names: Vec<&str> = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(port_names.contains(&monitor["spec"]["endpoints"][0]["port"].as_str().unwrap()));
    // The keygate container: probes on the metrics port, hardened, no subPath mounts.
    let containers = deploy["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    let kg = containers.iter().find(|c| c["name"] == "keygate").unwrap();
    assert_eq!(kg["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(kg["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(kg["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(kg["securityContext"]["allowPrivilegeEscalation"], false);
    for m in kg["volumeMounts"].as_sequence().unwrap() {
        assert!(
            m.get("subPath").is_none(),
            "no subPath: updates must reach the pod"
        );
    }
    let grace = deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace >= 5 + 20,
        "grace period covers shutdown_delay + shutdown"
    );
}
