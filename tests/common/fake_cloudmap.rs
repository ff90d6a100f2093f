//! AWS Cloud Map's data plane for the fake endpoint: DiscoverInstances and
//! DiscoverInstancesRevision in the awsJson1_1 protocol (`X-Amz-Target:
//! Route53AutoNaming_v20170314.OPERATION`), over namespaces, services and
//! instances a test registers, deregisters and marks unhealthy live.
//!
//! As in Cloud Map, a service's revision changes when an instance is
//! registered or deregistered, not when its health changes;
//! DiscoverInstances answers at most `MaxResults` instances (100 unless
//! asked for more, 1,000 at most), and no pages.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use serde_json::{json, Value};

/// The `X-Amz-Target` prefix of Cloud Map's operations.
pub const TARGET_PREFIX: &str = "Route53AutoNaming_v20170314.";

/// Instances answered when a request names no `MaxResults`.
const DEFAULT_MAX_RESULTS: u64 = 100;

/// One registered instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Its attributes (`AWS_INSTANCE_IPV4`, `AWS_INSTANCE_PORT`, ...).
    pub attributes: BTreeMap<String, String>,
    /// `HEALTHY`, `UNHEALTHY` or `UNKNOWN`.
    pub health: String,
}

#[derive(Debug, Default)]
struct Service {
    revision: i64,
    instances: BTreeMap<String, Instance>,
}

/// The fake's Cloud Map: services by (namespace, service).
#[derive(Debug, Default)]
pub struct CloudMap {
    namespaces: BTreeSet<String>,
    services: BTreeMap<(String, String), Service>,
    /// The `Host` header of every Cloud Map request, in order: where the
    /// SDK sent it.
    pub hosts: Vec<String>,
}

/// The attributes ECS registers for a task reached on `ip:port` (an SRV
/// record) in `zone`.
pub fn ecs_attributes(ip: &str, port: Option<u16>, zone: &str) -> BTreeMap<String, String> {
    let mut attrs: BTreeMap<String, String> = [
        ("AWS_INSTANCE_IPV4", ip),
        ("AVAILABILITY_ZONE", zone),
        ("ECS_CLUSTER_NAME", "default"),
        ("ECS_SERVICE_NAME", "web"),
        ("ECS_TASK_DEFINITION_FAMILY", "web"),
        ("REGION", "us-east-1"),
        ("AWS_INIT_HEALTH_STATUS", "HEALTHY"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(port) = port {
        attrs.insert("AWS_INSTANCE_PORT".into(), port.to_string());
    }
    attrs
}

impl CloudMap {
    /// Creates the service (and its namespace) with no instances.
    pub fn add_service(&mut self, namespace: &str, service: &str) {
        self.namespaces.insert(namespace.to_owned());
        self.services
            .entry((namespace.to_owned(), service.to_owned()))
            .or_insert_with(|| Service {
                // Like Cloud Map's, a number with no meaning but change.
                revision: 1_700_000_000_000,
                ..Service::default()
            });
    }

    fn service(&mut self, namespace: &str, service: &str) -> &mut Service {
        self.add_service(namespace, service);
        self.services
            .get_mut(&(namespace.to_owned(), service.to_owned()))
            .unwrap()
    }

    /// Registers (or re-registers) an instance, healthy; bumps the revision.
    pub fn register(
        &mut self,
        namespace: &str,
        service: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        let s = self.service(namespace, service);
        let instance = Instance {
            attributes,
            health: "HEALTHY".into(),
        };
        s.instances.insert(id.to_owned(), instance);
        s.revision += 1;
    }

    /// Deregisters an instance; bumps the revision. False when there was
    /// no such instance.
    pub fn deregister(&mut self, namespace: &str, service: &str, id: &str) -> bool {
        let s = self.service(namespace, service);
        let gone = s.instances.remove(id).is_some();
        if gone {
            s.revision += 1;
        }
        gone
    }

    /// Sets an instance's health; the revision stays.
    pub fn set_health(&mut self, namespace: &str, service: &str, id: &str, health: &str) {
        let s = self.service(namespace, service);
        if let Some(instance) = s.instances.get_mut(id) {
            instance.health = health.to_owned();
        }
    }

    /// The service's revision.
    pub fn revision(&mut self, namespace: &str, service: &str) -> i64 {
        self.service(namespace, service).revision
    }

    /// Sets the service's revision (it may go down: compared for change).
    pub fn set_revision(&mut self, namespace: &str, service: &str, revision: i64) {
        self.service(namespace, service).revision = revision;
    }
}

/// Cloud Map's error answer.
pub fn error(status: StatusCode, code: &str, message: &str) -> (StatusCode, String) {
    (
        status,
        json!({"__type": code, "Message": message}).to_string(),
    )
}

/// Answers the Cloud Map operation `op` (the target without its prefix).
pub fn call(map: &mut CloudMap, op: &str, body: &[u8]) -> (StatusCode, String) {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "bad JSON",
        );
    };
    let text = |name: &str| req[name].as_str().unwrap_or_default().to_owned();
    let (namespace, service) = (text("NamespaceName"), text("ServiceName"));
    if namespace.is_empty() || service.is_empty() {
        let msg = "NamespaceName and ServiceName are required";
        return error(StatusCode::BAD_REQUEST, "InvalidInput", msg);
    }
    if !map.namespaces.contains(&namespace) {
        let msg = format!("Namespace {namespace} not found");
        return error(StatusCode::BAD_REQUEST, "NamespaceNotFound", &msg);
    }
    let Some(s) = map.services.get(&(namespace.clone(), service.clone())) else {
        let msg = format!("Service {service} not found");
        return error(StatusCode::BAD_REQUEST, "ServiceNotFound", &msg);
    };
    match op {
        "DiscoverInstancesRevision" => {
            let out = json!({"InstancesRevision": s.revision});
            (StatusCode::OK, out.to_string())
        }
        "DiscoverInstances" => {
            let max = req["MaxResults"].as_u64().unwrap_or(DEFAULT_MAX_RESULTS);
            if !(1..=1000).contains(&max) {
                let msg = "MaxResults must be 1 to 1000";
                return error(StatusCode::BAD_REQUEST, "InvalidInput", msg);
            }
            let filter = req["HealthStatus"].as_str().unwrap_or("ALL");
            let healthy = |i: &&Instance| i.health == "HEALTHY";
            let any_healthy = s.instances.values().any(|i| healthy(&i));
            let wanted = |i: &&Instance| match filter {
                "HEALTHY" => healthy(i),
                "UNHEALTHY" => i.health == "UNHEALTHY",
                "HEALTHY_OR_ELSE_ALL" => !any_healthy || healthy(i),
                _ => true,
            };
            let instances: Vec<Value> = (s.instances.iter())
                .filter(|(_, i)| wanted(i))
                .take(max as usize)
                .map(|(id, i)| {
                    json!({
                        "InstanceId": id,
                        "NamespaceName": namespace,
                        "ServiceName": service,
                        "HealthStatus": i.health,
                        "Attributes": i.attributes,
                    })
                })
                .collect();
            let out = json!({"Instances": instances, "InstancesRevision": s.revision});
            (StatusCode::OK, out.to_string())
        }
        other => error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            &format!("the fake does not serve {other}"),
        ),
    }
}
