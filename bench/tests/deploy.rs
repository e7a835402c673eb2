//! The deployment files in `deploy/` agree with the binaries: every
//! Kubernetes manifest and the compose file parse, every node's
//! configuration is one its binary accepts, the ports and probe paths the
//! manifests use are those the configurations make the nodes serve, the
//! cluster map is consistent across nodes, and every image starts from
//! scratch. No cluster or container runtime is needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use millicent_broker::BrokerConfig;
use millicent_transport::probe::{LIVENESS_PATH, READINESS_PATH};
use millicent_vendor::VendorConfig;
use serde::Deserialize as _;
use serde_yaml_ng::Value;

const NAMESPACE: &str = "millicent";

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string in {value:?}"))
}

fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    let mut value = value;
    for key in path {
        value = value
            .get(*key)
            .unwrap_or_else(|| panic!("no {key} (of {path:?})"));
    }
    value
}

/// A node's configuration, parsed by its own binary's parser.
enum Node {
    Broker(BrokerConfig),
    Vendor(VendorConfig),
}

impl Node {
    fn parse(key: &str, text: &str) -> Node {
        if key.starts_with("broker") {
            Node::Broker(BrokerConfig::from_toml(text).unwrap_or_else(|e| panic!("{key}: {e}")))
        } else if key.starts_with("vendor") {
            Node::Vendor(VendorConfig::from_toml(text).unwrap_or_else(|e| panic!("{key}: {e:#}")))
        } else {
            panic!("{key} is neither a broker's nor a vendor node's configuration")
        }
    }

    fn ports(&self) -> (u16, u16) {
        match self {
            Node::Broker(c) => (c.listen.port(), c.metrics_listen.port()),
            Node::Vendor(c) => (c.listen.port(), c.metrics_listen.port()),
        }
    }

    fn data_dir(&self) -> &Path {
        match self {
            Node::Broker(c) => &c.data_dir,
            Node::Vendor(c) => &c.data_dir,
        }
    }

    fn node(&self) -> &str {
        match self {
            Node::Broker(c) => &c.node,
            Node::Vendor(c) => &c.node,
        }
    }

    fn image(&self) -> &'static str {
        match self {
            Node::Broker(_) => "millicent-broker",
            Node::Vendor(_) => "millicent-vendor",
        }
    }
}

/// Host and port of `url`.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").unwrap().1;
    let (host, port) = rest.trim_end_matches('/').rsplit_once(':').unwrap();
    (host.to_owned(), port.parse().unwrap())
}

/// The cluster map: shards kept once, peers and vendor URLs naming nodes
/// that exist, at their gRPC port, with what they say they keep.
/// `host_of(node)` is the host name a node is reached by.
fn check_cluster_map(nodes: &BTreeMap<String, Node>, host_of: impl Fn(&str) -> String) {
    let by_node: BTreeMap<&str, &Node> = nodes.values().map(|n| (n.node(), n)).collect();
    let mut shards = BTreeMap::new();
    let mut series = Vec::new();
    for node in nodes.values() {
        match node {
            Node::Broker(config) => {
                for &shard in &config.shards {
                    let other = shards.insert(shard, config.node.clone());
                    assert!(
                        other.is_none(),
                        "shard {shard} kept by {other:?} and {}",
                        config.node
                    );
                }
                let own = config.advertise_url.as_deref().unwrap();
                assert_eq!(
                    host_port(own),
                    (host_of(&config.node), config.listen.port())
                );
                for peer in &config.peers {
                    let Some(Node::Broker(peer_config)) = by_node.get(peer.node.as_str()) else {
                        panic!("{}: peer {} is no broker node", config.node, peer.node);
                    };
                    assert_eq!(
                        peer.shards, peer_config.shards,
                        "{} of {}",
                        peer.node, config.node
                    );
                    assert_eq!(
                        host_port(&peer.url),
                        (host_of(&peer.node), peer_config.listen.port())
                    );
                }
                assert_eq!(
                    config.peers.len() + 1,
                    nodes
                        .values()
                        .filter(|n| matches!(n, Node::Broker(_)))
                        .count()
                );
                for vendor in &config.vendors {
                    let (host, port) = host_port(&vendor.node);
                    let serving = nodes.values().find_map(|n| match n {
                        Node::Vendor(v) if host_of(&v.node) == host => Some(v),
                        _ => None,
                    });
                    let serving = serving.unwrap_or_else(|| panic!("no vendor node at {host}"));
                    assert_eq!(port, serving.listen.port());
                    assert!(
                        serving.vendors.iter().any(|v| v.name == vendor.name),
                        "{} does not serve {}",
                        serving.node,
                        vendor.name
                    );
                }
            }
            Node::Vendor(config) => series.push((config.series_range, config.node.clone())),
        }
    }
    series.sort();
    for pair in series.windows(2) {
        assert!(
            pair[0].0[1] < pair[1].0[0],
            "series ranges overlap: {pair:?}"
        );
    }
}

#[test]
fn kubernetes_manifests_match_what_the_binaries_serve() {
    let dir = deploy().join("k8s");
    let mut files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    assert!(files.remove("kustomization.yaml"));
    let kustomization = &documents(&dir.join("kustomization.yaml"))[0];
    let listed: BTreeSet<String> = at(kustomization, &["resources"])
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, files, "kustomization.yaml lists every manifest");

    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for file in &files {
        for doc in documents(&dir.join(file)) {
            assert!(doc.get("apiVersion").is_some(), "{file}: {doc:?}");
            let kind = str_at(&doc, &["kind"]).to_owned();
            str_at(&doc, &["metadata", "name"]);
            if kind != "Namespace" {
                assert_eq!(
                    str_at(&doc, &["metadata", "namespace"]),
                    NAMESPACE,
                    "{file}"
                );
            }
            by_kind.entry(kind).or_default().push(doc);
        }
    }

    let config_map = &by_kind["ConfigMap"][0];
    let config_map_name = str_at(config_map, &["metadata", "name"]);
    let nodes: BTreeMap<String, Node> = at(config_map, &["data"])
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(key, text)| {
            let key = key.as_str().unwrap().to_owned();
            let node = Node::parse(&key, text.as_str().unwrap());
            (key, node)
        })
        .collect();
    let secret = &by_kind["Secret"][0];
    let secret_name = str_at(secret, &["metadata", "name"]);
    let secret_keys: BTreeSet<&str> = at(secret, &["stringData"])
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    let services: BTreeMap<&str, &Value> = by_kind["Service"]
        .iter()
        .map(|s| (str_at(s, &["metadata", "name"]), s))
        .collect();

    let sets = &by_kind["StatefulSet"];
    assert_eq!(sets.len(), nodes.len(), "one StatefulSet per node");
    let mut seen = BTreeSet::new();
    for set in sets {
        let name = str_at(set, &["metadata", "name"]);
        assert_eq!(
            at(set, &["spec", "replicas"]).as_u64(),
            Some(1),
            "{name}: one owner"
        );
        let service = services[str_at(set, &["spec", "serviceName"])];
        assert_eq!(
            str_at(service, &["spec", "clusterIP"]),
            "None",
            "{name}: headless"
        );
        let pod = at(set, &["spec", "template", "spec"]);
        let labels = at(set, &["spec", "template", "metadata", "labels"]);
        for (key, value) in at(service, &["spec", "selector"]).as_mapping().unwrap() {
            assert_eq!(
                labels.get(key.as_str().unwrap()),
                Some(value),
                "{name}: selector"
            );
        }

        // The configuration it mounts, and what that makes the node serve.
        let volumes = at(pod, &["volumes"]).as_sequence().unwrap();
        let config_volume = volumes
            .iter()
            .find(|v| v.get("configMap").is_some())
            .unwrap();
        assert_eq!(
            str_at(config_volume, &["configMap", "name"]),
            config_map_name
        );
        let key = str_at(&at(config_volume, &["configMap", "items"])[0], &["key"]);
        let node = &nodes[key];
        assert_eq!(node.node(), name, "{key} names the node as its StatefulSet");
        seen.insert(key.to_owned());
        let (grpc, metrics) = node.ports();

        let container = &at(pod, &["containers"])[0];
        let image = str_at(container, &["image"]);
        assert!(
            image.starts_with(&format!("{}:", node.image())),
            "{name}: {image}"
        );
        let ports: BTreeMap<&str, u64> = at(container, &["ports"])
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    str_at(p, &["name"]),
                    at(p, &["containerPort"]).as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(ports["grpc"], u64::from(grpc), "{name}");
        assert_eq!(ports["metrics"], u64::from(metrics), "{name}");
        for (probe, path) in [
            ("livenessProbe", LIVENESS_PATH),
            ("readinessProbe", READINESS_PATH),
            ("startupProbe", LIVENESS_PATH),
        ] {
            let get = at(container, &[probe, "httpGet"]);
            assert_eq!(str_at(get, &["path"]), path, "{name} {probe}");
            assert_eq!(str_at(get, &["port"]), "metrics", "{name} {probe}");
        }
        for port in at(service, &["spec", "ports"]).as_sequence().unwrap() {
            let target = str_at(port, &["targetPort"]);
            assert_eq!(at(port, &["port"]).as_u64(), Some(ports[target]), "{name}");
        }

        // Its store is on its own volume, the configuration beside it.
        let args: Vec<&str> = at(container, &["args"])
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let mounts = at(container, &["volumeMounts"]).as_sequence().unwrap();
        let mount_of = |volume: &str| {
            let mount = mounts
                .iter()
                .find(|m| str_at(m, &["name"]) == volume)
                .unwrap();
            PathBuf::from(str_at(mount, &["mountPath"]))
        };
        let config_path = mount_of(str_at(config_volume, &["name"])).join(str_at(
            &at(config_volume, &["configMap", "items"])[0],
            &["path"],
        ));
        assert_eq!(args, ["--config", config_path.to_str().unwrap()], "{name}");
        let claim = &at(set, &["spec", "volumeClaimTemplates"])[0];
        let data = mount_of(str_at(claim, &["metadata", "name"]));
        assert!(
            node.data_dir().starts_with(&data),
            "{name}: store outside its volume"
        );
        assert_ne!(
            node.data_dir(),
            data,
            "{name}: the store is a folder of its own in the volume"
        );

        for var in at(container, &["env"]).as_sequence().unwrap() {
            let secret_ref = at(var, &["valueFrom", "secretKeyRef"]);
            assert_eq!(str_at(secret_ref, &["name"]), secret_name);
            assert!(secret_keys.contains(str_at(secret_ref, &["key"])), "{name}");
        }
    }
    assert_eq!(seen.len(), nodes.len(), "every configuration is mounted");
    check_cluster_map(&nodes, |node| {
        format!("{node}-0.{node}.{NAMESPACE}.svc.cluster.local")
    });
}

#[test]
fn the_compose_file_matches_what_the_binaries_serve() {
    let dir = deploy();
    let compose = &documents(&dir.join("compose.yaml"))[0];
    let mut nodes = BTreeMap::new();
    for (name, service) in at(compose, &["services"]).as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let image = str_at(service, &["image"]);
        let Some(binary) = image.strip_suffix(":dev") else {
            // Prometheus: optional, behind a profile.
            assert!(service.get("profiles").is_some(), "{name} pulls {image}");
            continue;
        };
        let volumes: Vec<&str> = at(service, &["volumes"])
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let config = volumes
            .iter()
            .find_map(|v| v.strip_suffix(":/etc/millicent/config.toml:ro"))
            .unwrap_or_else(|| panic!("{name} mounts no configuration"));
        let text = std::fs::read_to_string(dir.join(config)).unwrap();
        let node = Node::parse(name, &text);
        assert_eq!(node.node(), name);
        assert_eq!(node.image(), binary, "{name}");
        let data = volumes
            .iter()
            .find_map(|v| v.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{name} has no volume of its own"));
        assert!(node.data_dir().starts_with(data) && node.data_dir() != Path::new(data));
        let (grpc, metrics) = node.ports();
        let published: BTreeSet<u16> = at(service, &["ports"])
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| {
                p.as_str()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(published, BTreeSet::from([grpc, metrics]), "{name}");
        nodes.insert(name.to_owned(), node);
    }
    check_cluster_map(&nodes, str::to_owned);
}

#[test]
fn every_image_is_built_from_scratch() {
    let dir = deploy().join("images");
    let mut images = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let from: Vec<&str> = text
            .lines()
            .filter(|line| line.trim_start().to_ascii_uppercase().starts_with("FROM "))
            .collect();
        assert_eq!(from, ["FROM scratch"], "{}", path.display());
        images += 1;
    }
    assert_eq!(images, 3);
    let script = std::fs::read_to_string(deploy().join("build-images")).unwrap();
    assert!(script.contains("+crt-static"));
}
