//! The shipped deployment examples are valid keygate configuration: the config in the
//! Kubernetes ConfigMap with the keys in the Secret, the compose folder's files and the
//! sidecar component's config pass `keygate check`; and the manifests fit together
//! (what `kustomize build` and the kubelet would need, and the shutdown ordering).

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
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            continue; // components/: checked on their own below
        }
        let name = entry.file_name().into_string().unwrap();
        if name != "kustomization.yaml" && name != NATIVE_VARIANT {
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
    // The PodDisruptionBudget selects the same pods.
    let pdb = by_kind("PodDisruptionBudget");
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(
            &pod_labels[k], v,
            "the PodDisruptionBudget selects the pods"
        );
    }
}

/// The alternative to deployment.yaml with keygate as a native sidecar.
const NATIVE_VARIANT: &str = "deployment-native-sidecar.yaml";

/// `timeouts.shutdown_delay` + `timeouts.shutdown` of the ConfigMap's config, seconds.
fn drain_seconds() -> u64 {
    let cm = manifest("configmap.yaml");
    let config: serde_yaml::Value =
        serde_yaml::from_str(cm["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let secs = |v: &serde_yaml::Value| -> u64 {
        v.as_str()
            .unwrap()
            .strip_suffix('s')
            .unwrap()
            .parse()
            .unwrap()
    };
    secs(&config["timeouts"]["shutdown_delay"]) + secs(&config["timeouts"]["shutdown"])
}

fn container<'a>(pod: &'a serde_yaml::Value, list: &str, name: &str) -> &'a serde_yaml::Value {
    pod[list]
        .as_sequence()
        .unwrap_or_else(|| panic!("no {list}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

fn pre_stop_sleep(c: &serde_yaml::Value) -> u64 {
    c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("a preStop sleep")
}

/// The app container is probed through keygate's public listener (it listens on
/// loopback), on a path keygate forwards without a key.
fn assert_app_probed_through_keygate(app: &serde_yaml::Value, public_paths: &[&str]) {
    let probe = &app["readinessProbe"]["httpGet"];
    assert_eq!(
        probe["port"], 8080,
        "the app is probed on keygate's public port"
    );
    let path = probe["path"].as_str().unwrap();
    assert!(
        public_paths.contains(&path),
        "{path} must be in routes.public, or keygate answers the probe 401"
    );
}

fn public_paths(config_text: &str) -> Vec<String> {
    let config: serde_yaml::Value = serde_yaml::from_str(config_text).unwrap();
    assert!(config["listen"].as_str().unwrap().ends_with(":8080"));
    config["routes"]["public"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn app_outlives_keygate_drain() {
    let deploy = manifest("deployment.yaml");
    let pod = &deploy["spec"]["template"]["spec"];
    let app = container(pod, "containers", "app");
    let cm = manifest("configmap.yaml");
    let public = public_paths(cm["data"]["config.yaml"].as_str().unwrap());
    let public: Vec<&str> = public.iter().map(String::as_str).collect();
    assert_app_probed_through_keygate(app, &public);
    let sleep = pre_stop_sleep(app);
    assert!(
        sleep >= drain_seconds(),
        "the app's preStop sleep ({sleep}s) covers keygate's drain ({}s)",
        drain_seconds()
    );
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > sleep,
        "the grace period leaves the app time after its sleep"
    );
}

#[test]
fn native_sidecar_variant_matches_the_deployment() {
    let plain = manifest("deployment.yaml");
    let native = manifest(NATIVE_VARIANT);
    assert_eq!(plain["metadata"], native["metadata"]);
    assert_eq!(plain["spec"]["selector"], native["spec"]["selector"]);
    let (p, n) = (&plain["spec"]["template"], &native["spec"]["template"]);
    assert_eq!(p["metadata"], n["metadata"]);
    assert_eq!(p["spec"]["volumes"], n["spec"]["volumes"]);
    assert_eq!(p["spec"]["securityContext"], n["spec"]["securityContext"]);
    // keygate is an init container with restartPolicy: Always; otherwise the same.
    let kg = container(&n["spec"], "initContainers", "keygate");
    assert_eq!(kg["restartPolicy"], "Always");
    assert_eq!(kg["startupProbe"]["httpGet"]["path"], "/readyz");
    let mut kg_plain = container(&p["spec"], "containers", "keygate").clone();
    let mut kg_native = kg.clone();
    for c in [&mut kg_plain, &mut kg_native] {
        let m = c.as_mapping_mut().unwrap();
        m.remove("restartPolicy");
        m.remove("startupProbe");
    }
    assert_eq!(
        kg_plain, kg_native,
        "the keygate container is the same in both"
    );
    assert!(
        n["spec"]["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "keygate")
    );
    let app = container(&n["spec"], "containers", "app");
    let cm = manifest("configmap.yaml");
    let public = public_paths(cm["data"]["config.yaml"].as_str().unwrap());
    let public: Vec<&str> = public.iter().map(String::as_str).collect();
    assert_app_probed_through_keygate(app, &public);
    // keygate stops after the app: the grace period covers the app's sleep and
    // keygate's shutdown delay after it.
    let grace = n["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > pre_stop_sleep(app) + 5);
}

fn component_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes/components")
        .join(name)
}

fn component_yaml(name: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(component_file(name)).unwrap()).unwrap()
}

/// The keygate-sidecar component, as `kustomize build` would read it (Component has
/// no schema for kubernetes-validate): its files exist, its patch adds a hardened
/// native sidecar whose mounts all have volumes, and its config passes `keygate check`.
#[test]
fn sidecar_component_fits_together() {
    let k = component_yaml("keygate-sidecar/kustomization.yaml");
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1alpha1");
    assert_eq!(k["kind"], "Component");
    let patches = k["patches"].as_sequence().unwrap();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0]["target"]["kind"], "Deployment");
    let selector = patches[0]["target"]["labelSelector"].as_str().unwrap();
    let (label, value) = selector.split_once('=').unwrap();
    let patch = component_yaml(&format!(
        "keygate-sidecar/{}",
        patches[0]["path"].as_str().unwrap()
    ));
    assert_eq!(patch["kind"], "Deployment");
    let pod = &patch["spec"]["template"]["spec"];
    assert!(
        pod.get("containers").is_none(),
        "the app's containers are left alone"
    );
    let kg = container(pod, "initContainers", "keygate");
    assert_eq!(kg["restartPolicy"], "Always");
    assert_eq!(kg["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(kg["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(kg["startupProbe"]["httpGet"]["path"], "/readyz");
    let sc = &kg["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    let volumes: Vec<&str> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for m in kg["volumeMounts"].as_sequence().unwrap() {
        assert!(
            m.get("subPath").is_none(),
            "no subPath: updates must reach the pod"
        );
        let name = m["name"].as_str().unwrap();
        assert!(volumes.contains(&name), "volume {name} is defined");
    }
    let ports: Vec<&serde_yaml::Value> = kg["ports"].as_sequence().unwrap().iter().collect();
    for p in &ports {
        assert!(
            p["name"].as_str().unwrap().len() <= 15,
            "port names are at most 15 characters"
        );
    }
    // The generated ConfigMap is the one the patch mounts, and its config is valid
    // with the example's keys.
    let generator = &k["configMapGenerator"][0];
    let cm_volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v.get("configMap").is_some())
        .unwrap();
    assert_eq!(cm_volume["configMap"]["name"], generator["name"]);
    let config_name = generator["files"][0].as_str().unwrap();
    let config =
        std::fs::read_to_string(component_file(&format!("keygate-sidecar/{config_name}"))).unwrap();
    let secret = component_yaml("example/secret.yaml");
    let secret_volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v.get("secret").is_some())
        .unwrap();
    assert_eq!(
        secret_volume["secret"]["secretName"],
        secret["metadata"]["name"]
    );
    let dir = TempDir::new();
    let root = dir.path().display().to_string();
    dir.write(
        "config.yaml",
        &config
            .replace("/etc/keygate/keys/keys.yaml", &format!("{root}/keys.yaml"))
            .replace("/var/lib/keygate/state", &format!("{root}/state"))
            .replace("/var/log/keygate", &format!("{root}/logs")),
    );
    dir.write(
        "keys.yaml",
        secret["stringData"]["keys.yaml"].as_str().unwrap(),
    );
    let (ok, out) = check(&dir);
    assert!(ok, "{out}");
    // The example app opts in with the label, is probed through keygate, and its
    // Service sends traffic to keygate's port.
    let example = component_yaml("example/kustomization.yaml");
    assert_eq!(example["components"][0], "../keygate-sidecar");
    let app_deploy = component_yaml("example/deployment.yaml");
    assert_eq!(app_deploy["metadata"]["labels"][label], value);
    let public = public_paths(&config);
    let public: Vec<&str> = public.iter().map(String::as_str).collect();
    let app = container(&app_deploy["spec"]["template"]["spec"], "containers", "app");
    assert_app_probed_through_keygate(app, &public);
    let service = component_yaml("example/service.yaml");
    let http_port = ports
        .iter()
        .find(|p| p["containerPort"] == 8080)
        .expect("keygate's public port");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        http_port["containerPort"]
    );
}

/// The image: OCI labels, a version label that follows Cargo.toml, and base images
/// pinned to exact tags (never `latest`, the Rust image to a patch release).
#[test]
fn dockerfile_labels_and_pinned_bases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docker = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let arg = |name: &str| -> String {
        docker
            .lines()
            .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
            .unwrap_or_else(|| panic!("ARG {name}= in the Dockerfile"))
            .to_string()
    };
    assert_eq!(
        arg("VERSION"),
        version,
        "the image's version label follows Cargo.toml"
    );
    for label in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.licenses=\"Apache-2.0\"",
        "org.opencontainers.image.version=\"${VERSION}\"",
        "org.opencontainers.image.revision=\"${REVISION}\"",
        "org.opencontainers.image.created=\"${CREATED}\"",
    ] {
        assert!(docker.contains(label), "Dockerfile labels {label}");
    }
    let rust = arg("RUST_IMAGE");
    let tag = rust.rsplit(':').next().unwrap();
    let numbers: Vec<&str> = tag.split('-').next().unwrap().split('.').collect();
    assert!(
        numbers.len() == 3 && numbers.iter().all(|n| n.parse::<u32>().is_ok()),
        "RUST_IMAGE is pinned to a patch release: {rust}"
    );
    for image in [rust, arg("RUNTIME_IMAGE")] {
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "{image} has a tag"
        );
    }
}
